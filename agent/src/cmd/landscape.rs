//! `kubelink landscape`.

#[derive(clap::Args)]
pub struct LandscapeArgs {}

pub async fn run(_args: LandscapeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kubelink landscape` is being built")
}
