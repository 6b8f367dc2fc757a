//! A JSON object flattened while it is parsed: nested objects become dotted
//! field names (`AM2301.Temperature`), array elements their index
//! (`values.0`). Depth and field count are bounded as the parser goes, so a
//! hostile payload (10,000 levels deep, 65,000 keys) costs one rejection at
//! the first level or field too many, never a deep recursion, a large tree in
//! memory or thousands of rows.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::scalar::Leaf;
use crate::model::Reason;

/// Longest field name, dotted path included (the `field` column is 64 wide).
pub const MAX_FIELD_NAME: usize = 64;

/// Deepest nesting a route may allow: a MariaDB JSON column refuses a
/// document with 32 nested levels (checked with `JSON_VALID` on 10.11).
pub const MAX_DEPTH: usize = 31;

/// What a walk keeps and how far it may go.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Deepest nesting accepted; the object itself is 1.
    pub max_depth: usize,
    /// Most non-null values outside `picks`.
    pub max_fields: usize,
    /// Keep the fields (long and columns modes) rather than only count them.
    pub keep_fields: bool,
    /// Refuse field names that cannot be a `field` value (long mode).
    pub check_names: bool,
}

/// The walk's result.
#[derive(Debug, Default, PartialEq)]
pub struct Flat {
    /// `(dotted name, value)` of every non-null value outside the picks, in
    /// payload order (when kept).
    pub fields: Vec<(String, Leaf)>,
    /// The value at each picked path (the time and device keys), if present.
    pub picked: Vec<Option<Leaf>>,
}

/// Parses `payload`, a JSON object, into its flattened fields, setting apart
/// the values at `picks` (dotted paths). Rejections: `bad_json`,
/// `not_an_object`, `too_deep`, `too_many_fields`, `bad_field_name`,
/// `duplicate_field` (a key repeated in one object, or two paths that
/// flatten to the same name).
pub fn flatten(payload: &[u8], shape: &Shape, picks: &[&str]) -> Result<Flat, Reason> {
    let mut state = State {
        shape,
        picks,
        flat: Flat {
            fields: Vec::new(),
            picked: vec![None; picks.len()],
        },
        count: 0,
        names: HashSet::new(),
        reason: None,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let root = Node {
        state: &mut state,
        path: String::new(),
        depth: 1,
        root: true,
        fields: true,
    };
    match root.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(state.flat),
        Err(_) => Err(state.reason.unwrap_or(Reason::BadJson)),
    }
}

struct State<'p> {
    shape: &'p Shape,
    picks: &'p [&'p str],
    flat: Flat,
    count: usize,
    /// Names of the fields kept so far, to find two that flatten alike.
    names: HashSet<String>,
    /// Why the walk stopped, when it was not the parser that stopped it.
    reason: Option<Reason>,
}

impl State<'_> {
    /// Records why the walk stops; the error itself only unwinds the parser.
    fn fail<E: de::Error>(&mut self, reason: Reason) -> E {
        self.reason = Some(reason);
        E::custom(reason.as_str())
    }

    fn pick(&self, path: &str) -> Option<usize> {
        self.picks.iter().position(|p| *p == path)
    }
}

/// One value of the document, at `path`.
struct Node<'s, 'p> {
    state: &'s mut State<'p>,
    path: String,
    /// The nesting this value sits at (the top object is 1).
    depth: usize,
    root: bool,
    /// False inside a picked value: what is under it is not a field.
    fields: bool,
}

impl<'p> Node<'_, 'p> {
    fn child(&mut self, key: &str) -> Node<'_, 'p> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        Node {
            state: &mut *self.state,
            path,
            depth: self.depth + 1,
            root: false,
            fields: self.fields,
        }
    }

    /// Checks a container about to be entered; marks it when it is picked.
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth > self.state.shape.max_depth {
            return Err(self.state.fail(Reason::TooDeep));
        }
        if !self.root {
            if let Some(i) = self.state.pick(&self.path) {
                self.set_pick(i, Leaf::Nested)?;
                self.fields = false;
            }
        }
        Ok(())
    }

    fn set_pick<E: de::Error>(&mut self, i: usize, leaf: Leaf) -> Result<(), E> {
        match self.state.flat.picked.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(leaf);
                Ok(())
            }
            _ => Err(self.state.fail(Reason::DuplicateField)),
        }
    }

    fn leaf<E: de::Error>(mut self, leaf: Leaf) -> Result<(), E> {
        if self.root {
            return Err(self.state.fail(Reason::NotAnObject));
        }
        if let Some(i) = self.state.pick(&self.path) {
            return self.set_pick(i, leaf);
        }
        if !self.fields || leaf == Leaf::Null {
            return Ok(());
        }
        let shape = self.state.shape;
        if self.state.count >= shape.max_fields {
            return Err(self.state.fail(Reason::TooManyFields));
        }
        self.state.count += 1;
        if !shape.keep_fields {
            return Ok(());
        }
        if shape.check_names && self.path.chars().nth(MAX_FIELD_NAME).is_some() {
            return Err(self.state.fail(Reason::BadFieldName));
        }
        if !self.state.names.insert(self.path.clone()) {
            return Err(self.state.fail(Reason::DuplicateField));
        }
        self.state.flat.fields.push((self.path, leaf));
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Leaf::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.leaf(Leaf::Number(n)),
            None => Err(self.state.fail(Reason::NotFinite)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.leaf(Leaf::Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Null)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let bad = key.is_empty() || key.chars().any(char::is_control);
            if bad && self.fields && self.state.shape.check_names {
                return Err(self.state.fail(Reason::BadFieldName));
            }
            if keys.contains(&key) {
                return Err(self.state.fail(Reason::DuplicateField));
            }
            map.next_value_seed(self.child(&key))?;
            keys.insert(key);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if self.root {
            return Err(self.state.fail(Reason::NotAnObject));
        }
        self.enter()?;
        let mut index = 0usize;
        loop {
            let child = self.child(&index.to_string());
            if seq.next_element_seed(child)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Number;

    fn shape() -> Shape {
        Shape {
            max_depth: 16,
            max_fields: 64,
            keep_fields: true,
            check_names: true,
        }
    }

    fn flat(payload: &str) -> Result<Vec<(String, Leaf)>, &'static str> {
        flatten(payload.as_bytes(), &shape(), &[])
            .map(|f| f.fields)
            .map_err(Reason::as_str)
    }

    fn num(v: u64) -> Leaf {
        Leaf::Number(Number::from(v))
    }

    #[test]
    fn nesting_becomes_dotted_names_and_arrays_indices() {
        let got = flat(
            r#"{"Time":"2024-05-01T10:00:00","AM2301":{"Temperature":21.5,"Humidity":40.1},"TempUnit":"C",
                "values":[1,[2,{"x":3}]],"none":null,"empty":{},"list":[]}"#,
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Time",
                "AM2301.Temperature",
                "AM2301.Humidity",
                "TempUnit",
                "values.0",
                "values.1.0",
                "values.1.1.x"
            ],
            "in payload order; null and empty containers are not fields"
        );
        assert_eq!(got[6].1, num(3));
        assert_eq!(got[3].1, Leaf::Text("C".into()));
    }

    #[test]
    fn picks_are_set_apart_and_not_counted() {
        let shape = Shape {
            max_fields: 1,
            ..shape()
        };
        let f = flatten(
            br#"{"m_id":"0","datetime":"2024-05-01 10:00:00","temp":"21.0"}"#,
            &shape,
            &["datetime", "m_id"],
        )
        .unwrap();
        assert_eq!(
            f.picked,
            [
                Some(Leaf::Text("2024-05-01 10:00:00".into())),
                Some(Leaf::Text("0".into()))
            ]
        );
        assert_eq!(f.fields, [("temp".to_owned(), Leaf::Text("21.0".into()))]);
        // A nested pick, and a picked object whose contents are not fields.
        let f = flatten(
            br#"{"StatusSNS":{"Time":1714557600,"T":1},"dev":{"id":1}}"#,
            &shape,
            &["StatusSNS.Time", "dev"],
        )
        .unwrap();
        assert_eq!(f.picked, [Some(num(1_714_557_600)), Some(Leaf::Nested)]);
        assert_eq!(f.fields, [("StatusSNS.T".to_owned(), num(1))]);
    }

    #[test]
    fn what_is_not_an_object_says_so() {
        for payload in ["[1,2]", "null", "1", "\"x\"", "true"] {
            assert_eq!(flat(payload).unwrap_err(), "not_an_object", "{payload}");
        }
        for payload in [
            "",
            "{",
            "{\"a\":1}x",
            "{\"a\":NaN}",
            "{\"a\":1e400}",
            "\u{feff}{}",
        ] {
            assert_eq!(flat(payload).unwrap_err(), "bad_json", "{payload:?}");
        }
        assert_eq!(
            flatten(b"\xff{}", &shape(), &[]).unwrap_err(),
            Reason::BadJson
        );
    }

    #[test]
    fn depth_is_bounded_without_recursing_further() {
        let nested = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(flat(&nested(16)).unwrap()[0].0, vec!["a"; 16].join("."));
        assert_eq!(flat(&nested(17)).unwrap_err(), "too_deep");
        // 10,000 deep: refused at level 17, long before serde_json's own limit
        // (128, which would say bad_json) or the stack.
        assert_eq!(flat(&nested(10_000)).unwrap_err(), "too_deep");
        let arrays = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(flat(&arrays).unwrap_err(), "too_deep");
        // Unterminated, as a fuzzer would send it: still too deep, no panic.
        assert_eq!(flat(&"{\"a\":[".repeat(50_000)).unwrap_err(), "too_deep");
        let deepest = Shape {
            max_depth: MAX_DEPTH,
            ..shape()
        };
        let ok = flatten(nested(MAX_DEPTH).as_bytes(), &deepest, &[]);
        assert!(ok.is_ok());
    }

    #[test]
    fn field_count_is_bounded() {
        let keys: Vec<String> = (0..65_000).map(|i| format!("\"k{i}\":{i}")).collect();
        assert_eq!(
            flat(&format!("{{{}}}", keys.join(","))).unwrap_err(),
            "too_many_fields"
        );
        let huge_array = format!("{{\"v\":[{}]}}", vec!["1"; 100_000].join(","));
        assert_eq!(flat(&huge_array).unwrap_err(), "too_many_fields");
        let sixty_four = format!("{{\"v\":[{}]}}", vec!["1"; 64].join(","));
        assert_eq!(flat(&sixty_four).unwrap().len(), 64);
        // Nulls are not fields and do not count.
        let nulls = format!("{{\"v\":[{}], \"x\": 1}}", vec!["null"; 1000].join(","));
        assert_eq!(flat(&nulls).unwrap(), [("x".to_owned(), num(1))]);
    }

    #[test]
    fn names_must_fit_the_field_column() {
        let k64 = "k".repeat(64);
        assert_eq!(flat(&format!("{{\"{k64}\":1}}")).unwrap()[0].0, k64);
        assert_eq!(
            flat(&format!("{{\"{k64}k\":1}}")).unwrap_err(),
            "bad_field_name",
            "65 characters"
        );
        let path = format!("{{\"{}\":{{\"b\":1}}}}", "a".repeat(63));
        assert_eq!(
            flat(&path).unwrap_err(),
            "bad_field_name",
            "65 with its path"
        );
        // Characters, not bytes: 64 two-byte characters fit.
        let wide = "é".repeat(64);
        assert!(flat(&format!("{{\"{wide}\":1}}")).is_ok());
        for bad in [
            r#"{"":1}"#,
            r#"{"a":{"":1}}"#,
            r#"{"a\nb":1}"#,
            r#"{"\u0000":1}"#,
        ] {
            assert_eq!(flat(bad).unwrap_err(), "bad_field_name", "{bad}");
        }
        // Without name checks (columns and document modes) only the mapped keys matter.
        let lax = Shape {
            check_names: false,
            ..shape()
        };
        let f = flatten(format!("{{\"{k64}k\":1,\"\":2}}").as_bytes(), &lax, &[]).unwrap();
        assert_eq!(f.fields.len(), 2);
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        for payload in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a":null,"a":1}"#,
            r#"{"a":1,"a":{"b":2}}"#,
            r#"{"x":{"a":{},"a":[]}}"#,
            r#"{"a.b":1,"a":{"b":2}}"#,
            r#"{"v":[1],"v.0":2}"#,
            r#"{"time":1,"time":2}"#,
        ] {
            let err = flatten(payload.as_bytes(), &shape(), &["time"]).unwrap_err();
            assert_eq!(err, Reason::DuplicateField, "{payload}");
        }
        // The same key in two objects is two names.
        assert_eq!(flat(r#"{"a":{"x":1},"b":{"x":1}}"#).unwrap().len(), 2);
    }

    #[test]
    fn a_walk_that_only_counts_keeps_nothing() {
        let count = Shape {
            keep_fields: false,
            max_fields: 2,
            ..shape()
        };
        let f = flatten(br#"{"a":1,"b":{"c":"x"},"t":5}"#, &count, &["t"]).unwrap();
        assert!(f.fields.is_empty());
        assert_eq!(f.picked, [Some(num(5))]);
        assert_eq!(
            flatten(br#"{"a":1,"b":2,"c":3}"#, &count, &[]).unwrap_err(),
            Reason::TooManyFields
        );
    }

    /// Nested JSON with scalars at random places.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i32>().prop_map(|v| serde_json::Value::from(f64::from(v) / 4.0)),
            "[a-z0-9 .]{0,6}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The dotted name's value, looked up in the tree the usual way.
    fn lookup<'a>(tree: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
        name.split('.').try_fold(tree, |node, key| match node {
            serde_json::Value::Object(m) => m.get(key),
            serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
    }

    fn leaves(tree: &serde_json::Value) -> usize {
        match tree {
            serde_json::Value::Null => 0,
            serde_json::Value::Array(a) => a.iter().map(leaves).sum(),
            serde_json::Value::Object(m) => m.values().map(leaves).sum(),
            _ => 1,
        }
    }

    fn depth(tree: &serde_json::Value) -> usize {
        match tree {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        /// Every flattened field is the value its dotted name leads to, and
        /// every non-null leaf is a field exactly once; the bounds refuse
        /// exactly what exceeds them.
        #[test]
        fn flattening_keeps_every_leaf_once(
            tree in proptest::collection::btree_map("[a-z]{1,3}", json(), 0..5),
            max_depth in 1usize..8,
            max_fields in 0usize..40,
        ) {
            let tree = serde_json::Value::Object(tree.into_iter().collect());
            let payload = serde_json::to_vec(&tree).unwrap();
            let shape = Shape { max_depth, max_fields, keep_fields: true, check_names: false };
            let result = flatten(&payload, &shape, &[]);
            let (deep, many) = (depth(&tree) > max_depth, leaves(&tree) > max_fields);
            if deep && many {
                // Whichever the parser meets first.
                prop_assert!(matches!(result, Err(Reason::TooDeep | Reason::TooManyFields)));
            } else if deep {
                prop_assert_eq!(result, Err(Reason::TooDeep));
            } else if many {
                prop_assert_eq!(result, Err(Reason::TooManyFields));
            } else {
                // Keys are letters only, so names cannot collide through dots.
                let fields = result.unwrap().fields;
                prop_assert_eq!(fields.len(), leaves(&tree));
                for (name, leaf) in &fields {
                    let want = lookup(&tree, name);
                    let got = match leaf {
                        Leaf::Bool(b) => serde_json::Value::Bool(*b),
                        Leaf::Number(n) => serde_json::Value::Number(n.clone()),
                        Leaf::Text(t) => serde_json::Value::String(t.clone()),
                        other => panic!("{other:?} is not a field value"),
                    };
                    prop_assert_eq!(want, Some(&got), "{}", name);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_are_a_rejection_or_fields(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(f) = flatten(&bytes, &shape(), &["time"]) {
                prop_assert!(f.fields.len() <= 64);
            }
        }
    }
}
