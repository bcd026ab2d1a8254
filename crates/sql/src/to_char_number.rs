//! `to_char(number, template)` with PostgreSQL's numeric template patterns: `9` (a digit,
//! a leading zero left blank), `0` (a digit, leading zeros kept from there on), `.` and
//! `D` (the decimal point), `,` and `G` (a group separator, shown only after a digit),
//! `FM` (no padding, no trailing zeros in `9` places), `S` (the sign, `+` or `-`), `MI`
//! (`-` or a blank), `PR` (a negative number in angle brackets). Without `S`, `MI` or
//! `PR` a blank or `-` goes right before the first character shown. A number with more
//! integer digits than the template has places prints `#` in each. Other patterns
//! (`EEEE`, `V`, `L`, `RN`, `TH`, `PL`, `SG`) are refused, never printed as text.

use crate::error::SqlError;

/// A number as a sign and its decimal digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digits {
    pub(crate) negative: bool,
    /// The integer part's digits, without leading zeros ("" for zero).
    pub(crate) integer: String,
    /// The fraction's digits, as many as the number has.
    pub(crate) fraction: String,
}

impl Digits {
    /// An integer.
    pub(crate) fn of_integer(v: i128) -> Digits {
        Digits::of_decimal(v, 0)
    }

    /// `unscaled / 10^scale`.
    pub(crate) fn of_decimal(unscaled: i128, scale: i8) -> Digits {
        let negative = unscaled < 0;
        let text = unscaled.unsigned_abs().to_string();
        let scale = scale.max(0) as usize;
        let text = format!("{text:0>width$}", width = scale + 1);
        let (integer, fraction) = text.split_at(text.len() - scale);
        Digits {
            negative,
            integer: integer.trim_start_matches('0').to_string(),
            fraction: fraction.to_string(),
        }
    }

    /// A float with `places` digits after the point, rounded as `printf` rounds (to the
    /// nearest, ties by the exact binary value), as PostgreSQL's `float8_to_char` does.
    pub(crate) fn of_float(v: f64, places: usize) -> Option<Digits> {
        if !v.is_finite() {
            return None;
        }
        let text = format!("{:.*}", places, v.abs());
        let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
        Some(Digits {
            negative: v < 0.0 && text.bytes().any(|b| b.is_ascii_digit() && b != b'0'),
            integer: integer.trim_start_matches('0').to_string(),
            fraction: fraction.to_string(),
        })
    }

    /// Rounded to `places` digits after the point, half away from zero (numeric's rule).
    fn rounded(mut self, places: usize) -> Digits {
        if self.fraction.len() <= places {
            self.fraction
                .extend(std::iter::repeat_n('0', places - self.fraction.len()));
            return self;
        }
        let round_up = self.fraction.as_bytes()[places] >= b'5';
        self.fraction.truncate(places);
        if round_up {
            let mut all: Vec<u8> = format!("{}{}", self.integer, self.fraction).into_bytes();
            let mut i = all.len();
            loop {
                if i == 0 {
                    all.insert(0, b'1');
                    break;
                }
                i -= 1;
                if all[i] == b'9' {
                    all[i] = b'0';
                } else {
                    all[i] += 1;
                    break;
                }
            }
            let all = String::from_utf8(all).expect("digits");
            let (integer, fraction) = all.split_at(all.len() - places);
            self.integer = integer.trim_start_matches('0').to_string();
            self.fraction = fraction.to_string();
        }
        if self.integer.is_empty() && self.fraction.bytes().all(|b| b == b'0') {
            self.negative = false;
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Nine,
    Zero,
    Point,
    Group,
    Sign,
    Minus,
    Brackets,
    Text(char),
}

struct Template {
    items: Vec<Item>,
    fill_mode: bool,
}

fn parse(template: &str) -> Result<Template, SqlError> {
    let mut items = Vec::new();
    let mut fill_mode = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        let upper = rest.to_ascii_uppercase();
        let take = |n: usize| &rest[n..];
        if upper.starts_with("FM") {
            fill_mode = true;
            rest = take(2);
            continue;
        }
        if upper.starts_with("MI") {
            items.push(Item::Minus);
            rest = take(2);
            continue;
        }
        if upper.starts_with("PR") {
            items.push(Item::Brackets);
            rest = take(2);
            continue;
        }
        for unsupported in ["EEEE", "RN", "TH", "PL", "SG"] {
            if upper.starts_with(unsupported) {
                return Err(SqlError::new(
                    "0A000",
                    format!("the to_char pattern \"{unsupported}\" of numbers is not supported"),
                ));
            }
        }
        let item = match c {
            '9' => Item::Nine,
            '0' => Item::Zero,
            '.' | 'D' | 'd' => Item::Point,
            ',' | 'G' | 'g' => Item::Group,
            'S' | 's' => Item::Sign,
            'V' | 'v' | 'L' | 'l' => {
                return Err(SqlError::new(
                    "0A000",
                    format!("the to_char pattern \"{c}\" of numbers is not supported"),
                ));
            }
            '"' => {
                let after = &rest[1..];
                let end = after.find('"').unwrap_or(after.len());
                items.extend(after[..end].chars().map(Item::Text));
                rest = &after[(end + 1).min(after.len())..];
                continue;
            }
            other => Item::Text(other),
        };
        if item == Item::Point && items.contains(&Item::Point) {
            return Err(SqlError::new(
                "42601",
                "multiple decimal points in a to_char template",
            ));
        }
        items.push(item);
        rest = &rest[c.len_utf8()..];
    }
    Ok(Template { items, fill_mode })
}

/// The digit places after the template's decimal point.
pub(crate) fn fraction_places(template: &str) -> Result<usize, SqlError> {
    let t = parse(template)?;
    Ok(t.items
        .iter()
        .skip_while(|i| **i != Item::Point)
        .filter(|i| matches!(i, Item::Nine | Item::Zero))
        .count())
}

/// `number` printed by `template`.
pub(crate) fn render(number: Digits, template: &str) -> Result<String, SqlError> {
    let t = parse(template)?;
    let point = t.items.iter().position(|i| *i == Item::Point);
    let integer_places = t.items[..point.unwrap_or(t.items.len())]
        .iter()
        .filter(|i| matches!(i, Item::Nine | Item::Zero))
        .count();
    let fraction_places = t.items[point.map_or(t.items.len(), |p| p + 1)..]
        .iter()
        .filter(|i| matches!(i, Item::Nine | Item::Zero))
        .count();
    let number = number.rounded(fraction_places);
    let overflow = number.integer.len() > integer_places;
    // Without a decimal point a zero shows its one digit.
    let integer = if number.integer.is_empty() && point.is_none() {
        "0".to_string()
    } else {
        number.integer.clone()
    };
    // Where leading zeros show: from the first `0` place.
    let first_zero = t.items[..point.unwrap_or(t.items.len())]
        .iter()
        .filter(|i| matches!(i, Item::Nine | Item::Zero))
        .position(|i| *i == Item::Zero);
    let explicit_sign = t
        .items
        .iter()
        .any(|i| matches!(i, Item::Sign | Item::Minus | Item::Brackets));
    // Each item's text; `None` for a blank the fill mode drops.
    let mut out: Vec<Option<String>> = Vec::new();
    // Where the floating sign goes: before the first digit or point shown.
    let mut floating_at: Option<usize> = None;
    let mut digit_place = 0usize;
    let mut fraction_index = 0usize;
    let mut shown_digit = false;
    let mut after_point = false;
    let sign_text = |negative: bool, plus: &str| if negative { "-" } else { plus }.to_string();
    for item in &t.items {
        match item {
            Item::Nine | Item::Zero if !after_point => {
                let from_end = integer_places - digit_place;
                digit_place += 1;
                let text = if overflow {
                    Some("#".to_string())
                } else if from_end <= integer.len() {
                    Some(integer[integer.len() - from_end..][..1].to_string())
                } else if first_zero.is_some_and(|z| digit_place > z) {
                    Some("0".to_string())
                } else {
                    None
                };
                if let Some(d) = text {
                    if floating_at.is_none() {
                        floating_at = Some(out.len());
                    }
                    shown_digit = true;
                    out.push(Some(d));
                } else {
                    out.push(None);
                }
            }
            Item::Nine | Item::Zero => {
                let d = if overflow {
                    '#'
                } else {
                    number.fraction.as_bytes()[fraction_index] as char
                };
                fraction_index += 1;
                out.push(Some(d.to_string()));
            }
            Item::Point => {
                after_point = true;
                if floating_at.is_none() {
                    floating_at = Some(out.len());
                }
                out.push(Some(".".into()));
            }
            Item::Group => out.push(shown_digit.then(|| ",".to_string())),
            Item::Sign => out.push(Some(sign_text(number.negative, "+"))),
            Item::Minus => out.push(Some(sign_text(number.negative, " "))),
            Item::Brackets => out.push(Some(if number.negative { ">" } else { " " }.into())),
            Item::Text(c) => out.push(Some(c.to_string())),
        }
    }
    // A leading `S` (or `PR`'s bracket) floats to the first digit, as the implicit sign.
    let leading_sign = match t.items.first() {
        Some(Item::Sign) => {
            out.remove(0);
            floating_at = floating_at.map(|at| at - 1);
            Some(sign_text(number.negative, "+"))
        }
        _ if t.items.contains(&Item::Brackets) => {
            Some(if number.negative { "<" } else { " " }.to_string())
        }
        _ if !explicit_sign => Some(sign_text(number.negative, " ")),
        _ => None,
    };
    if t.fill_mode {
        // No blanks, no trailing zeros in `9` places after the point.
        let mut kept: Vec<String> = out.iter().flatten().cloned().collect();
        if point.is_some() {
            let nines_after: Vec<bool> = t.items[point.map_or(t.items.len(), |p| p + 1)..]
                .iter()
                .filter(|i| matches!(i, Item::Nine | Item::Zero))
                .map(|i| *i == Item::Nine)
                .collect();
            let point_at = kept.iter().position(|s| s == ".");
            if let Some(point_at) = point_at {
                let mut last = kept.len();
                for nine in nines_after.iter().rev() {
                    let at = last - 1;
                    if *nine && kept[at] == "0" && at > point_at {
                        kept.remove(at);
                        last -= 1;
                    } else {
                        break;
                    }
                }
                if fraction_places == 0 && kept.last().is_some_and(|s| s == ".") {
                    kept.pop();
                }
            }
        }
        let body: String = kept.concat();
        let body = if !body.bytes().any(|b| b.is_ascii_digit() || b == b'#') {
            format!("0{body}")
        } else {
            body
        };
        let sign = match leading_sign.as_deref() {
            Some("-") | Some("+") | Some("<") => leading_sign.clone().unwrap_or_default(),
            _ => String::new(),
        };
        return Ok(format!("{sign}{body}"));
    }
    let mut cells: Vec<String> = out
        .into_iter()
        .map(|c| c.unwrap_or_else(|| " ".into()))
        .collect();
    if let Some(sign) = leading_sign {
        // The sign takes the place before the first shown character (a blank, or the
        // extra leading place).
        let at = floating_at.unwrap_or(cells.len());
        cells.insert(0, " ".into());
        cells[at] = sign;
    }
    Ok(cells.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Digits {
        let negative = s.starts_with('-');
        let s = s.trim_start_matches('-');
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        let unscaled: i128 = format!("{i}{f}").parse().unwrap();
        Digits::of_decimal(if negative { -unscaled } else { unscaled }, f.len() as i8)
    }

    /// Each expectation is PostgreSQL 15's output for the same call.
    #[test]
    fn numbers_render_as_postgresql_renders_them() {
        for (n, template, want) in [
            ("0.5", "9.99", "  .50"),
            ("12", "999", "  12"),
            ("-12", "FM999", "-12"),
            ("1234.5", "9,999.00", " 1,234.50"),
            ("12345", "999", " ###"),
            ("-0.5", "0.9", "-0.5"),
            ("1.5", "FM9.99", "1.5"),
            ("1.5", "FM9.00", "1.50"),
            ("12", "S999", " +12"),
            ("-12", "999MI", " 12-"),
            ("-12", "999PR", " <12>"),
            ("12", "999PR", "  12 "),
            ("5", "00009", " 00005"),
            ("1234", "FM9G999", "1,234"),
            ("12", "9,999", "    12"),
            ("1000000", "FM999,999,999", "1,000,000"),
            ("0", "FM9.99", "0."),
            ("0", "9", " 0"),
            ("-1234.567", "FM999990.0", "-1234.6"),
            ("0.5", "FM9.99", ".5"),
            ("0", "9.99", "  .00"),
            ("0", "FM9.00", ".00"),
            ("0.5", "0.99", " 0.50"),
            ("0", "0.00", " 0.00"),
            ("0", "99", "  0"),
            ("0", "FM99", "0"),
            ("-0.5", "9.9", " -.5"),
            ("10", "9.9", " #.#"),
            ("1.25", "9.9", " 1.3"),
            ("-1.25", "9.9", "-1.3"),
            ("12.3", "FM999.999", "12.3"),
            ("12", "FM999.", "12"),
            ("12", "999D99", "  12.00"),
            ("-5", "S9", "-5"),
            ("5", "9S", "5+"),
            ("-5", "FMS9", "-5"),
            ("1234", "9999999", "    1234"),
            ("12", "0099", " 0012"),
            ("12", "9099", "  012"),
        ] {
            assert_eq!(
                render(dec(n), template).unwrap(),
                want,
                "to_char({n}, '{template}')"
            );
        }
        assert_eq!(
            render(Digits::of_float(1.23456, 3).unwrap(), "9.999").unwrap(),
            " 1.235"
        );
        assert_eq!(
            render(Digits::of_float(2.5, 0).unwrap(), "9").unwrap(),
            " 2"
        );
        assert_eq!(render(dec("1"), "9.99EEEE").unwrap_err().code, "0A000");
    }
}
