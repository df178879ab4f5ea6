//! The xl.cfg / xl.conf file syntax (libxlu's flex lexer `libxlu_cfg_l.l` and bison
//! grammar `libxlu_cfg_y.y`, Xen 4.17): text in, [`XlConfig`] out, no meaning attached.
//!
//! ```text
//! file       := { statement } [ assignment ]          (last line may lack a newline)
//! statement  := assignment end | end
//! end        := NEWLINE | ';'                         ('#' comment runs to the newline)
//! assignment := KEY ( '=' | '+=' ) value
//! value      := STRING | NUMBER | '[' nl* [ value nl* { ',' nl* value nl* } [ ',' nl* ] ] ']'
//! ```
//!
//! * Keys: libxlu allows `[a-z][._0-9a-z]*` (dots are used by xl.conf's
//!   `vif.default.bridge`); we accept the superset `[A-Za-z_][A-Za-z0-9_.]*`.
//! * Strings: `'...'` or `"..."`, on one line, with the same backslash escapes in both:
//!   `\\ \' \" \a \b \f \n \r \t \v`. xl 4.17's numeric escapes are broken (`\xHH`
//!   always fails, `\NNN` is silently dropped together with the following digits), so
//!   both are refused here instead of being reproduced.
//! * Numbers: a digit followed by letters/digits, read with C `strtol(.., 0)` rules:
//!   `0x1f` is hex, a leading `0` means **octal** (`010` is 8; `08` is invalid), as in
//!   xl. (libxlu keeps numbers as strings and converts on use; an unconvertible number
//!   token is refused here at parse time.)
//! * Only space and tab are blanks: a carriage return (DOS line ending) is an error,
//!   as in xl. A comment on the last line needs its newline (libxlu's `#.*\n` rule):
//!   a final comment without one is an error, as in xl.
//! * `key += value` appends to the previous value of `key` (string concatenation or
//!   list concatenation; mixing the two is an error; numbers cannot be added).
//! * A later assignment to the same key wins.
//!
//! Unlike xl, which reports every error and continues, parsing stops at the first
//! error, reported with line:column and what was expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Deepest list nesting accepted (xl has no explicit limit; this keeps the recursive
/// parser's stack bounded on hostile input).
pub const MAX_LIST_DEPTH: usize = 64;

/// A configuration value: a string, a number or a list of values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A quoted string, escapes already applied.
    Str(String),
    /// A number token (`strtol` base-0 rules, so never negative when parsed).
    Num(i64),
    /// A bracketed list.
    List(Vec<Value>),
}

impl Value {
    /// "string", "number" or "list", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Num(_) => "number",
            Value::List(_) => "list",
        }
    }
}

/// Renders the value in xl.cfg syntax (strings double-quoted with escapes), so that
/// parsing the output gives the value back (negative numbers, which the grammar cannot
/// express, are written as strings).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write_quoted(f, s),
            Value::Num(n) if *n < 0 => write!(f, "\"{n}\""),
            Value::Num(n) => write!(f, "{n}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            '\u{7}' => f.write_str("\\a")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            '\u{b}' => f.write_str("\\v")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A parsed xl configuration file: its settings in file order. `+=` settings are
/// stored already combined with the value they extend; the last setting of a key is
/// the one in effect (libxlu `find`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XlConfig {
    /// `(key, value)` in file order, repeats included.
    pub entries: Vec<(String, Value)>,
}

impl XlConfig {
    /// The value in effect for `key` (its last setting), if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Each distinct key once, in order of first appearance.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (key, _) in &self.entries {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
        keys
    }
}

/// Renders one `key = value` line per entry; parsing the output gives the same
/// entries back.
impl fmt::Display for XlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.entries {
            writeln!(f, "{key} = {value}")?;
        }
        Ok(())
    }
}

/// A syntax error at a 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}:{column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What was found and what was expected.
    pub message: String,
}

/// Reads a whole string as C `strtol(text, &end, 0)` with `*end == '\0'` required, as
/// libxlu's `xlu_cfg_get_long` does: leading whitespace, an optional sign, then `0x`
/// hex, `0` octal or decimal digits, and nothing after. Returns a reason on failure.
pub fn strtol_whole(text: &str) -> Result<i64, &'static str> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, trimmed.get(1..).unwrap_or_default()),
        Some(b'+') => (false, trimmed.get(1..).unwrap_or_default()),
        _ => (false, trimmed),
    };
    let lower = unsigned.get(..2).map(str::to_ascii_lowercase);
    let hex_digits = unsigned.get(2..).unwrap_or_default();
    let (radix, digits) = if lower.as_deref() == Some("0x")
        && hex_digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_hexdigit())
    {
        (16, hex_digits)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, unsigned.get(1..).unwrap_or_default())
    } else {
        (10, unsigned)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(
            if radix == 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
                "not a valid number (a leading 0 makes it octal)"
            } else {
                "not a valid number"
            },
        );
    }
    let magnitude = u64::from_str_radix(digits, radix).map_err(|_| "number out of range")?;
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or("number out of range")
}

// ---------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Key(String),
    Num(i64),
    Str(String),
    Comma,
    Open,
    Close,
    Assign,
    AddAssign,
    Semicolon,
    Newline,
    Eof,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Key(k) => format!("`{k}`"),
            Token::Num(n) => format!("number {n}"),
            Token::Str(s) => format!("string {}", Value::Str(s.clone())),
            Token::Comma => "`,`".to_owned(),
            Token::Open => "`[`".to_owned(),
            Token::Close => "`]`".to_owned(),
            Token::Assign => "`=`".to_owned(),
            Token::AddAssign => "`+=`".to_owned(),
            Token::Semicolon => "`;`".to_owned(),
            Token::Newline => "end of line".to_owned(),
            Token::Eof => "end of file".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pos {
    line: u32,
    column: u32,
}

struct Lexer<'a> {
    rest: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
    column: u32,
}

fn is_key_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            rest: text.chars().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.column = 1;
        } else {
            self.column = self.column.saturating_add(1);
        }
        Some(c)
    }

    fn error(pos: Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// The next token and where it starts.
    fn next_token(&mut self) -> Result<(Token, Pos), SyntaxError> {
        while matches!(self.rest.peek(), Some(' ' | '\t')) {
            self.bump();
        }
        let pos = self.pos();
        let Some(&c) = self.rest.peek() else {
            return Ok((Token::Eof, pos));
        };
        let token = match c {
            '\n' => {
                self.bump();
                Token::Newline
            }
            '#' => {
                loop {
                    match self.bump() {
                        Some('\n') => break,
                        Some(_) => {}
                        None => return Err(Self::error(
                            pos,
                            "comment on the last line must end with a newline (xl requires one)",
                        )),
                    }
                }
                Token::Newline
            }
            ',' => self.single(Token::Comma),
            '[' => self.single(Token::Open),
            ']' => self.single(Token::Close),
            '=' => self.single(Token::Assign),
            ';' => self.single(Token::Semicolon),
            '+' => {
                self.bump();
                if self.rest.peek() == Some(&'=') {
                    self.bump();
                    Token::AddAssign
                } else {
                    return Err(Self::unexpected(pos, '+'));
                }
            }
            '\'' | '"' => Token::Str(self.string(pos, c)?),
            c if c.is_ascii_digit() => {
                let mut text = String::new();
                while let Some(&c) = self.rest.peek() {
                    if !is_key_char(c) {
                        break;
                    }
                    text.push(c);
                    self.bump();
                }
                let n = strtol_whole(&text)
                    .map_err(|reason| Self::error(pos, format!("number `{text}`: {reason}")))?;
                Token::Num(n)
            }
            c if is_key_start(c) => {
                let mut key = String::new();
                while let Some(&c) = self.rest.peek() {
                    if !is_key_char(c) {
                        break;
                    }
                    key.push(c);
                    self.bump();
                }
                Token::Key(key)
            }
            c => return Err(Self::unexpected(pos, c)),
        };
        Ok((token, pos))
    }

    fn single(&mut self, token: Token) -> Token {
        self.bump();
        token
    }

    fn unexpected(pos: Pos, c: char) -> SyntaxError {
        let message = match c {
            '\r' => "unexpected carriage return (DOS line endings are not accepted, as in xl)"
                .to_owned(),
            '+' | '-' | '.' | '(' | ')' | ':' => format!(
                "unexpected character `{c}` (this looks like Python, which xl config files no \
                 longer support; quote the value)"
            ),
            c if c.is_control() => format!("unexpected control character U+{:04X}", u32::from(c)),
            c => format!("unexpected character `{c}`"),
        };
        Self::error(pos, message)
    }

    /// A quoted string opened by `quote` at `start`; escapes as libxlu's
    /// `xlu__cfgl_dequote` (see the module docs).
    fn string(&mut self, start: Pos, quote: char) -> Result<String, SyntaxError> {
        self.bump();
        let mut out = String::new();
        loop {
            let pos = self.pos();
            match self.rest.peek().copied() {
                None | Some('\n') => {
                    return Err(Self::error(
                        start,
                        format!("unterminated string: missing closing {quote} on this line"),
                    ))
                }
                Some(c) if c == quote => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    let escaped = match self.rest.peek().copied() {
                        None | Some('\n') => {
                            return Err(Self::error(
                                start,
                                format!(
                                    "unterminated string: missing closing {quote} on this line"
                                ),
                            ))
                        }
                        Some(e) => e,
                    };
                    let c =
                        match escaped {
                            '"' | '\'' | '\\' => escaped,
                            'a' => '\u{7}',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'v' => '\u{b}',
                            'x' => return Err(Self::error(
                                pos,
                                "hex escape `\\x` in a quoted string is not supported (xl 4.17 \
                                 rejects it too)",
                            )),
                            '0'..='7' => {
                                return Err(Self::error(
                                    pos,
                                    format!(
                                        "octal escape `\\{escaped}` in a quoted string is not \
                                     supported (xl 4.17 silently drops it)"
                                    ),
                                ))
                            }
                            other => {
                                return Err(Self::error(
                                    pos,
                                    format!("invalid escape `\\{other}` in a quoted string"),
                                ))
                            }
                        };
                    self.bump();
                    out.push(c);
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------

struct Parser<'a> {
    lexer: Lexer<'a>,
    token: Token,
    pos: Pos,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, SyntaxError> {
        let mut lexer = Lexer::new(text);
        let (token, pos) = lexer.next_token()?;
        Ok(Parser { lexer, token, pos })
    }

    fn advance(&mut self) -> Result<Token, SyntaxError> {
        let (token, pos) = self.lexer.next_token()?;
        self.pos = pos;
        Ok(std::mem::replace(&mut self.token, token))
    }

    fn expected(&self, what: &str) -> SyntaxError {
        Lexer::error(
            self.pos,
            format!("expected {what}, found {}", self.token.describe()),
        )
    }

    fn skip_newlines(&mut self) -> Result<(), SyntaxError> {
        while self.token == Token::Newline {
            self.advance()?;
        }
        Ok(())
    }

    fn file(&mut self) -> Result<XlConfig, SyntaxError> {
        let mut config = XlConfig::default();
        loop {
            match &self.token {
                Token::Eof => return Ok(config),
                Token::Newline | Token::Semicolon => {
                    self.advance()?;
                }
                Token::Key(_) => {
                    self.assignment(&mut config)?;
                    match self.token {
                        Token::Newline | Token::Semicolon | Token::Eof => {}
                        _ => {
                            let key = config.entries.last().map_or("", |(k, _)| k.as_str());
                            return Err(self.expected(&format!(
                                "end of line or `;` after the value of `{key}`"
                            )));
                        }
                    }
                }
                _ => return Err(self.expected("a key (a setting `key = value`)")),
            }
        }
    }

    fn assignment(&mut self, config: &mut XlConfig) -> Result<(), SyntaxError> {
        let Token::Key(key) = self.advance()? else {
            return Err(self.expected("a key"));
        };
        let add = match self.token {
            Token::Assign => false,
            Token::AddAssign => true,
            _ => return Err(self.expected(&format!("`=` or `+=` after key `{key}`"))),
        };
        self.advance()?;
        let value_pos = self.pos;
        let value = self.value(&key, 0)?;
        let value = if add {
            match config.get(&key) {
                None => value,
                Some(previous) => {
                    combine(&key, previous, value).map_err(|message| SyntaxError {
                        line: value_pos.line,
                        column: value_pos.column,
                        message,
                    })?
                }
            }
        } else {
            value
        };
        config.entries.push((key, value));
        Ok(())
    }

    fn value(&mut self, key: &str, depth: usize) -> Result<Value, SyntaxError> {
        match self.token {
            Token::Str(_) | Token::Num(_) => match self.advance()? {
                Token::Str(s) => Ok(Value::Str(s)),
                Token::Num(n) => Ok(Value::Num(n)),
                _ => Err(self.expected("a value")),
            },
            Token::Open => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(Lexer::error(
                        self.pos,
                        format!("lists nested more than {MAX_LIST_DEPTH} deep"),
                    ));
                }
                self.advance()?;
                self.skip_newlines()?;
                let mut items = Vec::new();
                loop {
                    if self.token == Token::Close {
                        break;
                    }
                    items.push(self.value(key, depth + 1)?);
                    self.skip_newlines()?;
                    match self.token {
                        Token::Comma => {
                            self.advance()?;
                            self.skip_newlines()?;
                        }
                        Token::Close => break,
                        _ => {
                            return Err(self.expected(&format!("`,` or `]` in the list of `{key}`")))
                        }
                    }
                }
                self.advance()?;
                Ok(Value::List(items))
            }
            _ => Err(self.expected(&format!(
                "a value for `{key}` (a quoted string, a number or `[`)"
            ))),
        }
    }
}

/// `previous += value` as libxlu's `xlu__cfg_concat_vals`: strings concatenate, lists
/// concatenate; mixing them, or numbers, is refused.
fn combine(key: &str, previous: &Value, value: Value) -> Result<Value, String> {
    match (previous, value) {
        (Value::Str(a), Value::Str(b)) => Ok(Value::Str(format!("{a}{b}"))),
        (Value::List(a), Value::List(b)) => {
            let mut items = a.clone();
            items.extend(b);
            Ok(Value::List(items))
        }
        (Value::Num(_), _) | (_, Value::Num(_)) => {
            Err(format!("can't use += with numbers (key `{key}`)"))
        }
        _ => Err(format!(
            "can't add [list] to \"string\" or vice versa (key `{key}`)"
        )),
    }
}

/// Parses xl.cfg / xl.conf text (libxlu grammar, see the module docs).
pub fn parse_xl_cfg(text: &str) -> Result<XlConfig, SyntaxError> {
    Parser::new(text)?.file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> Value {
        Value::Str(text.to_owned())
    }

    fn parse(text: &str) -> XlConfig {
        parse_xl_cfg(text).unwrap()
    }

    fn error(text: &str) -> SyntaxError {
        parse_xl_cfg(text).unwrap_err()
    }

    #[test]
    fn typical_file() {
        let cfg = parse(
            "# domnet guest\nname = \"d1\"\nmemory = 256\nvcpus=2; uuid='0f0e0d0c-0b0a-0908-0706-050403020100'\n\
             vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0',\n        'bridge=br1', ]\n",
        );
        assert_eq!(cfg.get("name"), Some(&s("d1")));
        assert_eq!(cfg.get("memory"), Some(&Value::Num(256)));
        assert_eq!(cfg.get("vcpus"), Some(&Value::Num(2)));
        assert_eq!(
            cfg.get("vif"),
            Some(&Value::List(vec![
                s("mac=00:16:3e:00:00:01,bridge=xenbr0"),
                s("bridge=br1")
            ]))
        );
        assert_eq!(cfg.keys(), ["name", "memory", "vcpus", "uuid", "vif"]);
    }

    #[test]
    fn last_line_without_newline_and_empty_statements() {
        let cfg = parse(";;\n\n a = 1 ;; b = 'x'");
        assert_eq!(
            cfg.entries,
            [("a".into(), Value::Num(1)), ("b".into(), s("x"))]
        );
        assert_eq!(parse("").entries, []);
        assert_eq!(parse("# only a comment\n").entries, []);
    }

    #[test]
    fn numbers_follow_strtol_base_zero() {
        let cfg = parse("a = 0x1f\nb = 010\nc = 0\nd = 0X10\n");
        assert_eq!(cfg.get("a"), Some(&Value::Num(31)));
        assert_eq!(cfg.get("b"), Some(&Value::Num(8)));
        assert_eq!(cfg.get("c"), Some(&Value::Num(0)));
        assert_eq!(cfg.get("d"), Some(&Value::Num(16)));
        for (text, needle) in [
            (
                "a = 08\n",
                "number `08`: not a valid number (a leading 0 makes it octal)",
            ),
            ("a = 12abc\n", "number `12abc`"),
            ("a = 0x\n", "number `0x`"),
            ("a = 1.5\n", "number `1.5`"),
            ("a = 99999999999999999999\n", "out of range"),
        ] {
            let e = error(text);
            assert_eq!((e.line, e.column), (1, 5), "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn strings_and_escapes() {
        let cfg =
            parse(r#"a = "x\ty\n\"q\" \\ \'" ; b = 'it\'s "fine"' ; c = "\a\b\f\v\r" ; d = ''"#);
        assert_eq!(cfg.get("a"), Some(&s("x\ty\n\"q\" \\ '")));
        assert_eq!(cfg.get("b"), Some(&s("it's \"fine\"")));
        assert_eq!(cfg.get("c"), Some(&s("\u{7}\u{8}\u{c}\u{b}\r")));
        assert_eq!(cfg.get("d"), Some(&s("")));
        assert!(error(r#"a = "\x41""#).message.contains("hex escape"));
        assert!(error(r#"a = "\101""#).message.contains("octal escape"));
        let e = error(r#"a = "\q""#);
        assert_eq!((e.line, e.column), (1, 6));
        assert!(e.message.contains("invalid escape `\\q`"), "{e}");
        let e = error("a = 'abc\nb = 1\n");
        assert_eq!((e.line, e.column), (1, 5));
        assert!(e.message.contains("unterminated string"), "{e}");
        assert!(error("a = \"abc\\").message.contains("unterminated"));
        // Raw control characters other than newline are allowed inside strings.
        assert_eq!(parse("a = '\r\u{1}'").get("a"), Some(&s("\r\u{1}")));
    }

    #[test]
    fn lists_span_lines_and_allow_trailing_comma() {
        let cfg = parse("l = [\n  1,\n  'two'\n  ,\n  [3, []],\n]\ne = []\nf = [\n]\n");
        assert_eq!(
            cfg.get("l"),
            Some(&Value::List(vec![
                Value::Num(1),
                s("two"),
                Value::List(vec![Value::Num(3), Value::List(vec![])])
            ]))
        );
        assert_eq!(cfg.get("e"), Some(&Value::List(vec![])));
        assert_eq!(cfg.get("f"), Some(&Value::List(vec![])));
        let e = error("l = [1 2]\n");
        assert_eq!((e.line, e.column), (1, 8));
        assert_eq!(
            e.message,
            "expected `,` or `]` in the list of `l`, found number 2"
        );
        let e = error("l = [1,,2]\n");
        assert!(e.message.contains("expected a value for `l`"), "{e}");
        let e = error("l = [1,\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("found end of file"), "{e}");
    }

    #[test]
    fn comments() {
        let cfg = parse("a = 1 # trailing\n# whole line\nb = [ 1, # inside\n 2 ]\n");
        assert_eq!(
            cfg.get("b"),
            Some(&Value::List(vec![Value::Num(1), Value::Num(2)]))
        );
        let e = error("a = 1\n# no newline at the end");
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("must end with a newline"), "{e}");
    }

    #[test]
    fn keys() {
        let cfg = parse("vif.default.bridge = 'br0'\nName_2 = 1\n_x = 2\n");
        assert_eq!(cfg.keys(), ["vif.default.bridge", "Name_2", "_x"]);
        let e = error("= 1\n");
        assert_eq!(
            e.message,
            "expected a key (a setting `key = value`), found `=`"
        );
        let e = error("a 1\n");
        assert_eq!((e.line, e.column), (1, 3));
        assert_eq!(
            e.message,
            "expected `=` or `+=` after key `a`, found number 1"
        );
        let e = error("a = b\n");
        assert!(e.message.contains("expected a value for `a`"), "{e}");
        assert!(e.message.contains("found `b`"), "{e}");
        let e = error("a = 1 b = 2\n");
        assert_eq!((e.line, e.column), (1, 7));
        assert!(e.message.contains("after the value of `a`"), "{e}");
        let e = error("a =\nb = 1\n");
        assert!(e.message.contains("found end of line"), "{e}");
    }

    #[test]
    fn lexical_errors() {
        let e = error("a = 1\r\n");
        assert_eq!((e.line, e.column), (1, 6));
        assert!(e.message.contains("carriage return"), "{e}");
        let e = error("memory = 1 + 2\n");
        assert!(e.message.contains("Python"), "{e}");
        let e = error("kernel = os.path.join('a')\n");
        assert!(e.message.contains("`os.path.join`"), "{e}");
        let e = error("x = (1)\n");
        assert!(e.message.contains("Python"), "{e}");
        let e = error("\n\n  a = 1 @\n");
        assert_eq!((e.line, e.column), (3, 9));
        assert!(e.message.contains("`@`"), "{e}");
    }

    #[test]
    fn add_assign() {
        let cfg = parse("a = 'x'\na += 'y'\nl = [1]\nl += [2, 3]\nn += 'new'\n");
        assert_eq!(cfg.get("a"), Some(&s("xy")));
        assert_eq!(
            cfg.get("l"),
            Some(&Value::List(vec![
                Value::Num(1),
                Value::Num(2),
                Value::Num(3)
            ]))
        );
        assert_eq!(cfg.get("n"), Some(&s("new")));
        let e = error("a = 'x'\na += [1]\n");
        assert_eq!((e.line, e.column), (2, 6));
        assert!(e.message.contains("can't add [list] to \"string\""), "{e}");
        assert!(error("a = 1\na += 2\n").message.contains("numbers"));
    }

    #[test]
    fn last_setting_wins() {
        let cfg = parse("a = 1\na = 2\n");
        assert_eq!(cfg.get("a"), Some(&Value::Num(2)));
        assert_eq!(cfg.entries.len(), 2);
        assert_eq!(cfg.get("missing"), None);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("a = {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(error(&deep).message.contains("nested"));
        let ok = format!("a = {}{}\n", "[".repeat(10), "]".repeat(10));
        assert!(parse_xl_cfg(&ok).is_ok());
    }

    #[test]
    fn strtol_rules() {
        assert_eq!(strtol_whole(" \t-0x10"), Ok(-16));
        assert_eq!(strtol_whole("+7"), Ok(7));
        assert_eq!(strtol_whole("017"), Ok(15));
        assert_eq!(strtol_whole("-9223372036854775808"), Ok(i64::MIN));
        assert!(strtol_whole("9223372036854775808").is_err());
        for bad in ["", " ", "-", "0x", "1 ", "abc", "09", "1e3", "--1"] {
            assert!(strtol_whole(bad).is_err(), "{bad:?}");
        }
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(|s| Value::Str(s.replace('\0', ""))),
            (0i64..=i64::MAX).prop_map(Value::Num),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::List)
        })
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in any::<String>()) {
            let _ = parse_xl_cfg(&text);
        }

        #[test]
        fn parser_never_panics_on_config_like_text(
            text in "[a-z =;,#\\[\\]'\"\\\\0-9x\n\t+.]{0,120}"
        ) {
            let _ = parse_xl_cfg(&text);
        }

        #[test]
        fn display_parse_round_trip(
            entries in prop::collection::vec(("[a-z_][a-z0-9_.]{0,8}", value_strategy()), 0..5)
        ) {
            let cfg = XlConfig { entries };
            let text = cfg.to_string();
            prop_assert_eq!(parse_xl_cfg(&text).unwrap(), cfg);
        }
    }
}
