//! Bucket names: OSS's naming rules, and the `*` globs that policies use
//! for buckets, keys, actions and access keys.

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Why `name` is not a valid OSS bucket name, if it is not: 3 to 63
/// characters, lower-case letters, digits and hyphens, starting and ending
/// with a letter or digit.
pub fn name_problem(name: &str) -> Option<String> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Some(format!(
            "{name:?} is not a bucket name: it must be 3 to 63 characters long"
        ));
    }
    if !bytes.iter().all(|&b| ok_char(b)) {
        return Some(format!(
            "{name:?} is not a bucket name: only lower-case letters, digits and '-' are allowed"
        ));
    }
    if !edge(bytes.first()) || !edge(bytes.last()) {
        return Some(format!(
            "{name:?} is not a bucket name: it must start and end with a letter or digit"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::name_problem;

    #[test]
    fn bucket_names_follow_oss_rules() {
        assert_eq!(name_problem("aws-alibaba-oss"), None);
        assert!(name_problem("Bad_Bucket").unwrap().contains("lower-case"));
        assert!(name_problem("ab").unwrap().contains("3 to 63"));
        assert!(name_problem("-abc").unwrap().contains("start and end"));
    }
}
