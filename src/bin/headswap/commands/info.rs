//! `headswap info`: the adapter chosen and the limits the engine uses.

use crate::args::InfoArgs;
use crate::{CliResult, gpu};

pub fn run(a: InfoArgs) -> CliResult<()> {
    let s = gpu()?.summary();
    if a.json {
        let v = serde_json::json!({
            "adapter": s.name, "backend": s.backend, "device_type": s.device_type, "driver": s.driver,
            "driver_info": s.driver_info, "max_storage_buffer_binding_size": s.max_storage_buffer_binding_size,
            "max_buffer_size": s.max_buffer_size, "max_storage_buffers_per_shader_stage": s.max_storage_buffers_per_shader_stage,
            "max_compute_workgroup_size": s.max_compute_workgroup_size,
            "max_compute_invocations_per_workgroup": s.max_compute_invocations_per_workgroup,
            "shader_f16": s.shader_f16, "subgroups": s.subgroups, "timestamp_queries": s.timestamp_queries,
        });
        outln!("{v}")
    } else {
        outln!("{s}")
    }
}
