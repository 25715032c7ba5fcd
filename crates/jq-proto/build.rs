//! Generates the jq wire contract from `proto/jq/v1/*.proto`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Canonical, so cargo's change detection sees edits to the .proto files.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../proto")
        .canonicalize()?;
    let files = [
        "jq/v1/common.proto",
        "jq/v1/job_service.proto",
        "jq/v1/worker_service.proto",
        "jq/v1/admin_service.proto",
        "jq/v1/events.proto",
    ];
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("jq_descriptor.bin"))
        .compile_protos(&paths, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
