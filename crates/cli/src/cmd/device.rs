//! `slmpack device`: print this device's detected profile (YAML, or JSON with `--json`), to
//! save, edit and pass to `slmpack select --device profile.yaml`.

use slmpack_manifest::device::DeviceProfile;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let p = DeviceProfile::detect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", p.to_yaml());
    }
    Ok(())
}
