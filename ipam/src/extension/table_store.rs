//! The allocation table on the seed: a ConfigMap in kubelink's namespace, written only by
//! compare-and-swap (a replace guarded by its resourceVersion, or a create), so that of two
//! controllers deciding from the same table exactly one write lands and the other decides again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::contract::labels;
use crate::store::{MAX_ATTEMPTS, StoreError, backoff, is_conflict};
use crate::table::Table;

/// The ConfigMap holding the table, and its key (the table as JSON `{"<namespace>/<name>": "<address>"}`).
pub const NAME: &str = "kubelink-allocations";
pub const KEY: &str = "allocations";

/// The table a ConfigMap holds, with descriptions of entries skipped because they do not parse.
pub fn table_of(map: Option<&ConfigMap>) -> (Table, Vec<String>) {
    let text = map.and_then(|m| m.data.as_ref()).and_then(|d| d.get(KEY));
    text.map(|t| Table::parse(t)).unwrap_or_default()
}

/// Reads the table, lets `decide` compute the next one (`None`: no change) and writes it when it
/// changed; on a conflict reads and decides again. Returns what `decide` returned last.
pub async fn swap<R>(
    api: &Api<ConfigMap>,
    mut decide: impl FnMut(&Table) -> (Option<Table>, R),
) -> Result<R, StoreError> {
    for attempt in 0..MAX_ATTEMPTS {
        let current = api.get_opt(NAME).await?;
        let (table, problems) = table_of(current.as_ref());
        for p in problems {
            tracing::warn!("ConfigMap {NAME}: {p}");
        }
        let (next, result) = decide(&table);
        let Some(next) = next.filter(|n| *n != table) else { return Ok(result) };
        let written = match current {
            Some(mut map) => {
                map.data.get_or_insert_with(BTreeMap::new).insert(KEY.into(), next.to_text());
                api.replace(NAME, &PostParams::default(), &map).await
            }
            None => api.create(&PostParams::default(), &new_map(api.namespace(), &next)).await,
        };
        match written {
            Ok(_) => return Ok(result),
            Err(e) if is_conflict(&e) => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended { what: format!("ConfigMap {NAME}"), attempts: MAX_ATTEMPTS })
}

fn new_map(namespace: Option<&str>, table: &Table) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: namespace.map(String::from),
            labels: Some(labels::managed()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), table.to_text())].into()),
        ..Default::default()
    }
}
