//! Port names (`http`, `discard`) as stone accepts them, from /etc/services.

/// Looks `name` up in /etc/services for `proto` ("tcp" or "udp").
pub fn lookup(name: &str, proto: &str) -> Option<u16> {
    let text = std::fs::read_to_string("/etc/services").ok()?;
    find(&text, name, proto)
}

fn find(text: &str, name: &str, proto: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let service = words.next()?;
        let (port, p) = words.next()?.split_once('/')?;
        let aliases: Vec<&str> = words.collect();
        if p == proto && (service == name || aliases.contains(&name)) {
            port.parse().ok()
        } else {
            None
        }
    })
}

/// The name for `port`, if it has one (stone prints `127.0.0.1:discard`).
pub fn name_of(port: u16, proto: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/services").ok()?;
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let service = words.next()?;
        let (p, pr) = words.next()?.split_once('/')?;
        (pr == proto && p.parse::<u16>().ok()? == port).then(|| service.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_names_and_aliases() {
        let text = "http\t\t80/tcp\t\twww\t# WorldWideWeb\ndomain\t\t53/udp\n";
        assert_eq!(super::find(text, "http", "tcp"), Some(80));
        assert_eq!(super::find(text, "www", "tcp"), Some(80));
        assert_eq!(super::find(text, "domain", "udp"), Some(53));
        assert_eq!(super::find(text, "domain", "tcp"), None);
    }
}
