// gather.wgsl — (being written)
