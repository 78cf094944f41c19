//! Property tests of the manifest reader: whatever bytes a store returns, `Manifest::parse`
//! answers with a manifest or an error, never a panic; and what it accepts is safe to use.
use proptest::prelude::*;
use serde_json::Value;

use crate::manifest::Manifest;

const KEY: &str = "_backup/a-b-c/manifests/1724502896789123.json";

/// A valid manifest: the base that mutations start from.
const SAMPLE: &str = r#"{
  "format_version": 1,
  "instance": "a-b-c",
  "data_id": "7b1d2c9e-5a4f-4c1e-9a0b-3c2d1e0f9a8b",
  "backup_timestamp": "2024-08-24T12:34:56.789123Z",
  "backup_micros": 1724502896789123,
  "tables": [
    {
      "meta": {
        "format_version": 1,
        "name": "trades",
        "columns": [{"name": "ts", "type": "TIMESTAMP"}, {"name": "symbol", "type": "SYMBOL"}, {"name": "price", "type": "DOUBLE"}],
        "timestamp": "ts",
        "partition_by": "DAY"
      },
      "commit_version": 12,
      "files": [
        {
          "path": "2024-01-15/01a2e3.parquet",
          "partition": "2024-01-15",
          "rows": 1440,
          "bytes": 48213,
          "min_ts": 1705276800000000,
          "max_ts": 1705363140000000,
          "hash": "23759e9d00112233445566778899aabbccddeeff00112233445566778899aabb",
          "object": "files/23/23759e9d00112233445566778899aabbccddeeff00112233445566778899aabb.zst",
          "codec": "zst",
          "stored_bytes": 45102
        }
      ]
    }
  ]
}"#;

/// Every JSON pointer in `v` (objects and arrays included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// Values a hostile or broken store might put anywhere.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".*".prop_map(Value::String),
        prop::sample::select(vec![
            "../../etc/passwd",
            "/abs/path.parquet",
            "2024-01-15/../../x",
            "files/23/../../../manifests/x.json",
            "",
            "trades; DROP TABLE x",
            "2024-01-15/",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "DAY",
            "NONE",
            "TIMESTAMP",
            "raw",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What an accepted manifest must satisfy, whatever it came from.
fn check_accepted(m: &Manifest) {
    for t in &m.tables {
        t.meta.validate().expect("accepted table definitions are valid");
        for f in &t.files {
            f.file
                .check_location(&t.meta.name)
                .expect("accepted paths stay in their table");
            // `..` may appear inside a name (`x..parquet`), never as a step of a path.
            let steps_out = |p: &str| p.split('/').any(|step| step == ".." || step == "." || step.is_empty());
            assert!(!steps_out(&f.file.path), "{}", f.file.path);
            assert!(f.object.starts_with("files/") && !steps_out(&f.object), "{}", f.object);
        }
    }
    let again = serde_json::to_vec(m).expect("serializes");
    assert_eq!(&Manifest::parse(KEY, &again).expect("round trip"), m);
}

fn parse_and_check(bytes: &[u8]) {
    if let Ok(m) = Manifest::parse(KEY, bytes) {
        check_accepted(&m);
    }
}

#[test]
fn the_sample_is_valid() {
    check_accepted(&Manifest::parse(KEY, SAMPLE.as_bytes()).expect("sample parses"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_and_check(&bytes);
    }

    #[test]
    fn truncated_or_with_a_changed_byte(cut in 0..SAMPLE.len(), at in 0..SAMPLE.len(), byte in any::<u8>()) {
        parse_and_check(&SAMPLE.as_bytes()[..cut]);
        let mut changed = SAMPLE.as_bytes().to_vec();
        changed[at] = byte;
        parse_and_check(&changed);
    }

    #[test]
    fn any_field_replaced(pick in any::<prop::sample::Index>(), value in hostile_value()) {
        let mut doc: Value = serde_json::from_str(SAMPLE).expect("sample is JSON");
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let pointer = pick.get(&all).clone();
        if let Some(slot) = doc.pointer_mut(&pointer) {
            *slot = value;
        }
        parse_and_check(&serde_json::to_vec(&doc).expect("serializes"));
    }
}
