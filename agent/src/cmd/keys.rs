//! `kubelink keys`: key generation compatible with `wg genkey | wg pubkey`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use kubelink_contract::keys::PrivateKey;

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Print a new private key (or write it to --out with mode 0600).
    Genkey {
        /// Write the key to this file (created with mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin, print its public key.
    Pubkey,
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Genkey { out: Some(path) } => write_private_key(&path, &PrivateKey::generate()),
        KeysCommand::Genkey { out: None } => {
            println!("{}", PrivateKey::generate().expose_base64().as_str());
            Ok(())
        }
        KeysCommand::Pubkey => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the private key from stdin")?;
            let key: PrivateKey = text.parse().context("stdin: not a WireGuard private key")?;
            println!("{}", key.public_key());
            Ok(())
        }
    }
}

/// Writes a private key file readable by its owner only; refuses to overwrite.
pub fn write_private_key(path: &std::path::Path, key: &PrivateKey) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(file, "{}", key.expose_base64().as_str()).with_context(|| format!("writing {}", path.display()))
}
