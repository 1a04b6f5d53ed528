//! Where a client's path leads: the directories above the mount, an object
//! key (or key prefix) inside the user's root, or nowhere it may go.

/// A client's path, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `/`, or a directory on the way to the mount (`/mnt`): the listing
    /// holds only the next step towards it.
    Above {
        /// The next path component towards the mount.
        next: String,
    },
    /// At or below the mount: `key` is the object key (the user's prefix
    /// joined with the rest of the path), without a trailing `/`; empty
    /// at the user's root when the user has no prefix.
    Inside {
        /// The object key.
        key: String,
        /// Whether this is the mount itself (the user's root).
        root: bool,
    },
    /// Anywhere else.
    Outside,
}

/// `path` made absolute against `home` with `.` and `..` applied (`..` at
/// `/` stays at `/`, as in POSIX), without a trailing `/`.
pub fn normalize(home: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{home}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where the normalized `path` leads for a user whose root `prefix` (empty
/// or ending in `/`) is mounted at `mount` (`/` or `/a/b`).
pub fn place(mount: &str, prefix: &str, path: &str) -> Place {
    let rest = if mount == "/" {
        Some(path.trim_start_matches('/'))
    } else if path == mount {
        Some("")
    } else {
        path.strip_prefix(mount).and_then(|r| r.strip_prefix('/'))
    };
    if let Some(rest) = rest {
        let key = format!("{prefix}{rest}");
        return Place::Inside {
            key: key.trim_end_matches('/').to_string(),
            root: rest.is_empty(),
        };
    }
    let above = if path == "/" {
        Some(mount.trim_start_matches('/'))
    } else {
        mount.strip_prefix(path).and_then(|r| r.strip_prefix('/'))
    };
    match above {
        Some(r) if !r.is_empty() => Place::Above {
            next: r.split('/').next().unwrap_or_default().to_string(),
        },
        _ => Place::Outside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_absolute_and_dots_resolved() {
        assert_eq!(normalize("/mnt/ossfs", "."), "/mnt/ossfs");
        assert_eq!(normalize("/mnt/ossfs", "a/./b/"), "/mnt/ossfs/a/b");
        assert_eq!(normalize("/mnt/ossfs", "/mnt/ossfs/../x"), "/mnt/x");
        assert_eq!(normalize("/", "../../etc"), "/etc");
        assert_eq!(normalize("/mnt/ossfs", "/"), "/");
    }

    #[test]
    fn the_mount_leads_into_the_users_root_and_nowhere_else() {
        let p = |path: &str| place("/mnt/ossfs", "", path);
        assert_eq!(
            p("/mnt/ossfs"),
            Place::Inside {
                key: String::new(),
                root: true
            }
        );
        assert_eq!(
            p("/mnt/ossfs/a/b.txt"),
            Place::Inside {
                key: "a/b.txt".into(),
                root: false
            }
        );
        assert_eq!(p("/"), Place::Above { next: "mnt".into() });
        assert_eq!(
            p("/mnt"),
            Place::Above {
                next: "ossfs".into()
            }
        );
        assert_eq!(p("/mnt/ossfsx"), Place::Outside);
        assert_eq!(p("/etc/passwd"), Place::Outside);
        assert_eq!(p("/mnt/other"), Place::Outside);
        assert_eq!(
            place("/", "up/", "/x/y"),
            Place::Inside {
                key: "up/x/y".into(),
                root: false
            }
        );
        assert_eq!(
            place("/", "up/", "/"),
            Place::Inside {
                key: "up".into(),
                root: true
            }
        );
    }
}
