//! Path templates (`/employees/{id}`, `/files/{*rest}`): the one scanner
//! every reader of a template uses — the compiler (the parameters an
//! upstream URL or a `path_schema` may name), the proxy (upstream URL
//! templates), the agents (tool arguments into a path) and the OpenAPI
//! export. Routing itself is matchit's.

/// A piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// Text between parameters. An unclosed `{` and what follows it is
    /// literal text too; readers that must refuse it look for a `{`.
    Literal(&'a str),
    /// `{name}`: one path segment.
    Param(&'a str),
    /// `{*name}`: the rest of the path, `/` included.
    Rest(&'a str),
}

/// The pieces of `template`, in order; empty literals are left out.
pub fn parts(template: &str) -> impl Iterator<Item = Part<'_>> {
    let mut rest = template;
    let mut pending: Option<Part<'_>> = None;
    std::iter::from_fn(move || {
        if let Some(part) = pending.take() {
            return Some(part);
        }
        if rest.is_empty() {
            return None;
        }
        let Some((open, len)) = rest
            .find('{')
            .and_then(|open| rest[open..].find('}').map(|len| (open, len)))
        else {
            return Some(Part::Literal(std::mem::take(&mut rest)));
        };
        let inner = &rest[open + 1..open + len];
        let param = match inner.strip_prefix('*') {
            Some(name) => Part::Rest(name),
            None => Part::Param(inner),
        };
        let literal = &rest[..open];
        rest = &rest[open + len + 1..];
        if literal.is_empty() {
            Some(param)
        } else {
            pending = Some(param);
            Some(Part::Literal(literal))
        }
    })
}

/// The names of the `{name}` and `{*name}` parameters.
pub fn params(template: &str) -> impl Iterator<Item = &str> {
    parts(template).filter_map(|part| match part {
        Part::Param(name) | Part::Rest(name) => Some(name),
        Part::Literal(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_splits_into_literals_and_parameters() {
        assert_eq!(
            parts("/a/{id}/b/{*rest}").collect::<Vec<_>>(),
            [
                Part::Literal("/a/"),
                Part::Param("id"),
                Part::Literal("/b/"),
                Part::Rest("rest"),
            ]
        );
        assert_eq!(
            parts("{x}{y}").collect::<Vec<_>>(),
            [Part::Param("x"), Part::Param("y")]
        );
        assert_eq!(
            parts("/plain").collect::<Vec<_>>(),
            [Part::Literal("/plain")]
        );
        assert_eq!(parts("").count(), 0);
    }

    #[test]
    fn an_unclosed_brace_is_literal_text() {
        assert_eq!(
            parts("/a/{id}/{oops").collect::<Vec<_>>(),
            [
                Part::Literal("/a/"),
                Part::Param("id"),
                Part::Literal("/{oops")
            ]
        );
    }

    #[test]
    fn params_include_catch_alls() {
        assert_eq!(
            params("/a/{id}/b/{*rest}").collect::<Vec<_>>(),
            ["id", "rest"]
        );
        assert_eq!(params("/plain").count(), 0);
    }
}
