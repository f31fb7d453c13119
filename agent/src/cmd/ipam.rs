//! `kubelink ipam`: tunnel address allocation for shoots.

#[derive(clap::Args)]
pub struct IpamArgs {}

pub async fn run(_args: IpamArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kubelink ipam` is not built yet (issue 3)")
}
