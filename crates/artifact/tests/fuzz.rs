//! Property tests of the source-spec parser: any string either parses or is
//! refused with a reason (never a panic), and what parses prints back to itself.

use proptest::prelude::*;
use tp06_artifact::Source;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_spec_parses_or_is_refused(spec in any::<String>()) {
        match spec.parse::<Source>() {
            Ok(source) => prop_assert_eq!(source.to_string().parse::<Source>().unwrap(), source),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn hub_like_specs_round_trip(
        owner in "[A-Za-z0-9]{1,6}([._-][A-Za-z0-9]{1,6}){0,2}",
        name in "[A-Za-z0-9]{1,6}([._-][A-Za-z0-9]{1,6}){0,2}",
        rev in proptest::option::of("[A-Za-z0-9/._-]{1,10}"),
    ) {
        let spec = match &rev {
            Some(r) => format!("hf:{owner}/{name}@{r}"),
            None => format!("hf:{owner}/{name}"),
        };
        let source: Source = spec.parse().unwrap();
        prop_assert!(source.is_hub());
        prop_assert_eq!(source.to_string(), spec);
    }

    #[test]
    fn hub_specs_with_junk_are_refused(junk in prop_oneof![Just(".."), Just("--"), Just(" "), Just(":"), Just("é"), Just("\\")]) {
        let spec = format!("hf:own{junk}er/name");
        prop_assert!(spec.parse::<Source>().is_err(), "{}", spec);
    }
}
