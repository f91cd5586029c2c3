// metrics.wgsl — (being written)
