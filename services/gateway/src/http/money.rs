//! Money at the edge: read from the exact JSON number text (never through a
//! binary float) and written as a JSON number with two decimals.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An exact amount of money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(pub Decimal);

impl Money {
    /// Parses the decimal string the services send.
    pub fn from_wire(field: &str, text: &str) -> anyhow::Result<Money> {
        Decimal::from_str(text.trim())
            .map(Money)
            .map_err(|e| anyhow::anyhow!("{field} {text:?} from a service is not a decimal: {e}"))
    }

    /// The decimal string the services expect.
    pub fn to_wire(self) -> String {
        self.0.normalize().to_string()
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = format!("{:.2}", self.0.round_dp(2));
        // serde_json writes a RawValue verbatim: the number keeps its digits.
        let raw = RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(deserializer)?;
        parse_number_text(raw.get())
            .map(Money)
            .map_err(D::Error::custom)
    }
}

/// The JSON number text as an exact decimal; strings, exponents and other
/// JSON values are refused.
fn parse_number_text(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    let is_plain_number = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
    if !is_plain_number {
        return Err(format!(
            "invalid type: expected a decimal number such as 999.99, found {}",
            truncate(text)
        ));
    }
    Decimal::from_str_exact(text)
        .map_err(|_| format!("{} is not a decimal number such as 999.99", truncate(text)))
}

fn truncate(text: &str) -> String {
    // By characters: a byte cut could fall inside one and panic.
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Priced {
        price: Money,
    }

    #[test]
    fn reads_the_exact_digits() {
        let p: Priced = serde_json::from_str(r#"{"price": 999.99}"#).unwrap();
        assert_eq!(p.price.0, Decimal::new(99999, 2));
        // 0.1 + 0.2 style values stay exact.
        let p: Priced = serde_json::from_str(r#"{"price": 0.30}"#).unwrap();
        assert_eq!(p.price.0, Decimal::new(30, 2));
        let p: Priced = serde_json::from_str(r#"{"price": 12345678.005}"#).unwrap();
        assert_eq!(p.price.0.to_string(), "12345678.005");
    }

    #[test]
    fn refuses_strings_exponents_and_others() {
        for body in [
            r#"{"price": "999.99"}"#,
            r#"{"price": 1e3}"#,
            r#"{"price": true}"#,
            r#"{"price": null}"#,
            r#"{"price": [1]}"#,
        ] {
            assert!(serde_json::from_str::<Priced>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn refuses_long_non_ascii_values_without_panicking() {
        // The message quotes the first 40 characters: a cut inside a
        // multi-byte character must not panic (the worker would drop the
        // connection instead of answering 400).
        let body = format!(r#"{{"price": "{}"}}"#, "é".repeat(40));
        let err = serde_json::from_str::<Priced>(&body).err().unwrap();
        assert!(
            err.to_string().contains("expected a decimal number"),
            "{err}"
        );
    }

    #[test]
    fn writes_a_number_with_two_decimals() {
        let json = serde_json::to_string(&Money(Decimal::new(99999, 2))).unwrap();
        assert_eq!(json, "999.99");
        let json =
            serde_json::to_string(&Money(Decimal::from_str("1999.980000").unwrap())).unwrap();
        assert_eq!(json, "1999.98");
        let json = serde_json::to_string(&Money(Decimal::from(5))).unwrap();
        assert_eq!(json, "5.00");
        let value: serde_json::Value = serde_json::from_str(&format!("{{\"p\":{json}}}")).unwrap();
        assert!(value["p"].is_number());
    }

    #[test]
    fn wire_format_round_trips() {
        let m = Money::from_wire("price", "999.99").unwrap();
        assert_eq!(m.to_wire(), "999.99");
        assert!(Money::from_wire("price", "abc").is_err());
    }
}
