//! Feeds arbitrary UTF-8 to `parse_filter` (and, line by line, to `parse_order_by`).
//! Beyond "does not panic / overflow the stack / hang" it checks that errors point inside
//! the input and that every accepted filter round-trips through its canonical text.
#![no_main]

use capstan_search::{matches, parse_filter, parse_order_by, AttrValue, ParseError, RunView};
use libfuzzer_sys::fuzz_target;

/// A run with a little of everything, so `matches` gets exercised on parsed filters.
struct Run;

impl RunView for Run {
    fn metric(&self, key: &str) -> Option<f64> {
        match key {
            "a" => Some(1.0),
            "nan" => Some(f64::NAN),
            _ => None,
        }
    }
    fn param(&self, key: &str) -> Option<&str> {
        (key == "p").then_some("value")
    }
    fn tag(&self, key: &str) -> Option<&str> {
        (key == "mlflow.runName").then_some("brave-owl")
    }
    fn attribute(&self, key: &str) -> Option<AttrValue<'_>> {
        match key {
            "status" => Some(AttrValue::Str("FINISHED")),
            "start_time" => Some(AttrValue::Num(1000.0)),
            _ => None,
        }
    }
}

fn check_error(input: &str, e: &ParseError) {
    assert!(e.position <= input.len(), "{e:?}");
    assert!(input.is_char_boundary(e.position), "{e:?}");
    assert_eq!(e.column, input[..e.position].chars().count() + 1, "{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match parse_filter(input) {
        Ok(Some(expr)) => {
            let text = expr.to_string();
            match parse_filter(&text) {
                Ok(Some(again)) => assert_eq!(again, expr, "round trip through {text:?}"),
                other => panic!("canonical text {text:?} of {input:?} gave {other:?}"),
            }
            let _ = matches(&expr, &Run);
        }
        Ok(None) => assert!(input.trim().is_empty()),
        Err(e) => check_error(input, &e),
    }
    let items: Vec<String> = input.split('\n').map(str::to_string).collect();
    if let Ok(orders) = parse_order_by(&items) {
        let texts: Vec<String> = orders.iter().map(|o| o.to_string()).collect();
        assert_eq!(parse_order_by(&texts), Ok(orders));
    }
});
