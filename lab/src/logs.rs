//! `lab logs NAME`: a service's output, found by its short name (or
//! `primary`, the database node that is primary now).

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::Result;
use crate::runtime::Runtime;
use crate::up::containers;

pub async fn logs(
    rt: &dyn Runtime,
    lab: &str,
    name: &str,
    follow: bool,
    tail: Option<u32>,
) -> Result<()> {
    rt.ping().await?;
    let all = containers(rt, lab).await?;
    let c = crate::primary::find(rt, lab, &all, name).await?;
    let mut s = rt.logs(&c.name, follow, tail).await?;
    let mut out = tokio::io::stdout();
    loop {
        tokio::select! {
            item = s.next() => match item {
                Some(chunk) => {
                    // A closed pipe (`lab logs x | head`) ends quietly.
                    if out.write_all(chunk?.as_bytes()).await.is_err() { break; }
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = out.flush().await;
    Ok(())
}
