//! Label and field selectors, in the real server's text syntax.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed `fieldSelector`: `path=value`, `path==value`, `path!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses (`a in (x,y),b`).
fn split_terms(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut terms) = (0i32, 0usize, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(text[start..].trim());
    terms.into_iter().filter(|t| !t.is_empty()).collect()
}

fn parse_set(text: &str) -> Result<Vec<String>, ApiError> {
    let inner = text.trim().strip_prefix('(').and_then(|t| t.strip_suffix(')')).ok_or_else(|| {
        ApiError::bad_request(format!("unable to parse requirement: expected a set like (a,b), got {text:?}"))
    })?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn parse_equality(term: &str) -> Option<Requirement> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Some(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    term.split_once('=').map(|(k, v)| Requirement::Equals(k.trim().into(), v.trim().into()))
}

fn parse_label_term(term: &str) -> Result<Requirement, ApiError> {
    if let Some(req) = parse_equality(term) {
        return Ok(req);
    }
    if let Some((k, set)) = term.split_once(" notin ") {
        return Ok(Requirement::NotIn(k.trim().into(), parse_set(set)?));
    }
    if let Some((k, set)) = term.split_once(" in ") {
        return Ok(Requirement::In(k.trim().into(), parse_set(set)?));
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(k.trim().into()));
    }
    if term.contains(char::is_whitespace) {
        return Err(ApiError::bad_request(format!("unable to parse requirement: {term:?}")));
    }
    Ok(Requirement::Exists(term.into()))
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        split_terms(text).into_iter().map(parse_label_term).collect::<Result<_, _>>().map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|l| set.iter().any(|v| v == l)),
            Requirement::NotIn(k, set) => !get(k).is_some_and(|l| set.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// The value at a dotted path, as the string the server compares (missing = empty).
fn field_value(object: &Value, path: &str) -> String {
    let pointer = format!("/{}", path.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        split_terms(text)
            .into_iter()
            .map(|t| {
                parse_equality(t).ok_or_else(|| {
                    ApiError::bad_request(format!("invalid field selector {t:?}: expected path=value or path!=value"))
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => field_value(object, k) == *v,
            Requirement::NotEquals(k, v) => field_value(object, k) != *v,
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_real_syntax() {
        let obj = json!({"metadata": {"labels": {"app": "kubelink", "slot": "0"}}});
        for (text, want) in [
            ("app=kubelink", true),
            ("app==kubelink,slot=0", true),
            ("app!=kubelink", false),
            ("slot in (0,1)", true),
            ("slot notin (0,1)", false),
            ("app", true),
            ("!app", false),
            ("missing", false),
            ("!missing", true),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(text).unwrap().matches(&obj), want, "{text}");
        }
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"seedName": "s1"}});
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.seedName==s1,metadata.name!=b").unwrap().matches(&obj));
        assert!(!FieldSelector::parse("spec.seedName=s2").unwrap().matches(&obj));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
