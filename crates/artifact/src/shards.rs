//! Sharded checkpoints, as larger hub models are stored: the weights split
//! into several files (`model-00001-of-00004.safetensors` …) and an index,
//! `model.safetensors.index.json` or `pytorch_model.bin.index.json`, whose
//! `weight_map` names each tensor's file. The hub fetches the files the index
//! names; the weight reader opens them.

use std::collections::BTreeMap;
use std::path::Path;

/// A sharded checkpoint's index file.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// Tensor name → the shard file holding it, relative to the index's directory.
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Whether a file name is a shard index (`….index.json`).
    pub fn is_index(name: &str) -> bool {
        name.ends_with(".index.json")
    }

    /// Reads and checks `path`: a JSON object whose `weight_map` maps tensor
    /// names to plain file names in the same directory. The error is one line
    /// naming the field at fault.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("not a JSON shard index ({e}); re-download it or the whole model"))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or("no `weight_map` object: not a sharded checkpoint index")?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| format!("`weight_map.{tensor}` is not a file name"))?;
            let plain = Path::new(file).components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if file.is_empty() || !plain {
                return Err(format!(
                    "`weight_map.{tensor}` is `{file}`, not a file beside the index; shards live in the index's directory"
                ));
            }
            weight_map.insert(tensor.clone(), file.to_string());
        }
        if weight_map.is_empty() {
            return Err("`weight_map` is empty: the index names no tensor".into());
        }
        Ok(Self { weight_map })
    }

    /// The shard files, each once, in name order.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> Result<ShardIndex, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors.index.json");
        std::fs::write(&path, text).unwrap();
        ShardIndex::read(&path)
    }

    #[test]
    fn an_index_names_its_shards_once_each_and_refuses_what_is_not_one() {
        let ok =
            index(r#"{"metadata": {"total_size": 8}, "weight_map": {"b": "m-2.st", "a": "m-1.st", "c": "m-2.st"}}"#);
        assert_eq!(ok.unwrap().files(), ["m-1.st", "m-2.st"]);
        for (text, says) in [
            ("{", "not a JSON shard index"),
            (r#"{"metadata": {}}"#, "no `weight_map` object"),
            (r#"{"weight_map": {}}"#, "`weight_map` is empty"),
            (r#"{"weight_map": {"a": 3}}"#, "`weight_map.a` is not a file name"),
            (r#"{"weight_map": {"a": "../elsewhere.st"}}"#, "`weight_map.a` is `../elsewhere.st`, not a file beside"),
            (r#"{"weight_map": {"a": "/abs.st"}}"#, "not a file beside the index"),
        ] {
            let err = index(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
