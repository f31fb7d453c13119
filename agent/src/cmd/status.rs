//! `kubelink status`.

#[derive(clap::Args)]
pub struct StatusArgs {}

pub async fn run(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kubelink status` is being built")
}
