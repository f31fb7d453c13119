//! `kubelink run` / `kubelink down`: standalone mode from a config file.

#[derive(clap::Args)]
pub struct RunArgs {}
#[derive(clap::Args)]
pub struct DownArgs {}

pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kubelink run` is being built")
}
pub async fn down(_args: DownArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kubelink down` is being built")
}
