//! Splitting a stone `-C` config file into words, the way stone 2.4 does.
//!
//! Newlines are plain whitespace, so a `<stone>` may span lines. `#` starts
//! a comment that runs to the end of the line, even inside a word (the word
//! then continues on the next line). `"..."` and `'...'` quote. Outside
//! single quotes `\n`, `\r`, `\t` are control characters, `\X` is `X`, and
//! `$VAR` / `${VAR}` expand from the environment. Whitespace directly before
//! `:` or `=` is dropped, joining the words.

/// Splits `text` into words. Errors name the line of an unterminated quote.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    split_with(text, |name| std::env::var(name).ok())
}

fn split_with(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\n' | ' ' | '\t' | '\r' => {
                if c == '\n' {
                    line += 1;
                }
                // `y :z` joins into `y:z`.
                let mut j = i;
                while j < chars.len() && matches!(chars[j], ' ' | '\t') {
                    j += 1;
                }
                if in_word && j < chars.len() && matches!(chars[j], ':' | '=') {
                    i = j;
                    continue;
                }
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                i += 1;
                line += 1;
            }
            '\'' => {
                in_word = true;
                let start = line;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("line {start}: unterminated ' quote")),
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            word.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                let start = line;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("line {start}: unterminated \" quote")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            i += 1;
                            if let Some(&e) = chars.get(i) {
                                word.push(unescape(e));
                                i += 1;
                            }
                        }
                        Some('$') => {
                            i += 1;
                            i = expand(&chars, i, &mut word, &env);
                        }
                        Some(&ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            word.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                if let Some(&e) = chars.get(i) {
                    i += 1;
                    if e == '\n' || e == ' ' {
                        // stone ends the word at an escaped blank or newline.
                        if e == '\n' {
                            line += 1;
                        }
                        if in_word {
                            words.push(std::mem::take(&mut word));
                            in_word = false;
                        }
                    } else {
                        word.push(unescape(e));
                        in_word = true;
                    }
                }
            }
            '$' => {
                in_word = true;
                i = expand(&chars, i, &mut word, &env);
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        other => other,
    }
}

/// Expands `$NAME` or `${NAME}` starting at `chars[i]` (after the `$`).
fn expand(
    chars: &[char],
    mut i: usize,
    word: &mut String,
    env: &impl Fn(&str) -> Option<String>,
) -> usize {
    let braced = chars.get(i) == Some(&'{');
    if braced {
        i += 1;
    }
    let start = i;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    let name: String = chars[start..i].iter().collect();
    if braced && chars.get(i) == Some(&'}') {
        i += 1;
    }
    if name.is_empty() {
        word.push('$');
    } else if let Some(v) = env(&name) {
        word.push_str(&v);
    }
    i
}

#[cfg(test)]
mod tests {
    use super::split_with;

    fn split(t: &str) -> Result<Vec<String>, String> {
        split_with(t, |n| (n == "RELAY").then(|| "10.0.0.1".to_string()))
    }

    #[test]
    fn stone_tokenizer_rules() {
        let text = "# relay for OSS\n-d -d\n  oss.example:80 80 # trailing\n\"a b\" 'c#d' e\\tf abc#c\ndef y :z $RELAY:80 ${RELAY}x '$RELAY'\n";
        assert_eq!(
            split(text).unwrap(),
            [
                "-d",
                "-d",
                "oss.example:80",
                "80",
                "a b",
                "c#d",
                "e\tf",
                "abcdef",
                "y:z",
                "10.0.0.1:80",
                "10.0.0.1x",
                "$RELAY"
            ]
        );
        assert!(split("x \"open\n").unwrap_err().contains("line 1"));
    }
}
