//! stone's packet dump (`-p`, or `p<mode>` on an xhost): every chunk a
//! connection carries is logged, as `3 5>6 hello<0a>` (modes 1 and 2) or as
//! hex and text eight bytes a line (mode 3 and up). Dumped connections use
//! the buffered copy, since spliced bytes never reach user space.

use std::fmt::Write as _;

/// Which connection and direction a chunk belongs to.
#[derive(Debug, Clone)]
pub struct Dump {
    /// Dump mode (1 or 2: escaped text; 3+: hex).
    pub mode: u32,
    /// stone's relay number.
    pub id: i32,
    /// `5>6`: source and destination descriptors.
    pub arrow: String,
}

impl Dump {
    /// Logs one chunk.
    pub fn log(&self, data: &[u8]) {
        for line in render(self.mode, data) {
            tracing::info!(target: "ossrelay::dump", "{} {} {line}", self.id, self.arrow);
        }
    }
}

/// The dump lines for `data` in `mode`.
pub fn render(mode: u32, data: &[u8]) -> Vec<String> {
    if mode < 3 {
        let mut s = String::with_capacity(data.len());
        for &b in data {
            if (0x20..0x7f).contains(&b) && b != b'<' {
                s.push(b as char);
            } else {
                let _ = write!(s, "<{b:02x}>");
            }
        }
        return vec![s];
    }
    data.chunks(8)
        .map(|chunk| {
            let mut s = String::new();
            for i in 0..8 {
                match chunk.get(i) {
                    Some(b) => {
                        let _ = write!(s, "{b:02x} ");
                    }
                    None => s.push_str("   "),
                }
            }
            s.push(' ');
            s.extend(chunk.iter().map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            }));
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn stone_formats() {
        assert_eq!(render(1, b"hello\tworld\x01\n"), ["hello<09>world<01><0a>"]);
        assert_eq!(
            render(3, b"hello\two"),
            ["68 65 6c 6c 6f 09 77 6f  hello.wo"]
        );
        assert_eq!(render(3, b"abc"), ["61 62 63                 abc"]);
    }
}
