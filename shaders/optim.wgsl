// optim.wgsl — (being written)
