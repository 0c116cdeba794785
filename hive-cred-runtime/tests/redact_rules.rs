//! One test per pattern rule of `rules/patterns.toml`: it matches its example (the
//! example comes out with `[hive:detected.<rule>]` in place of the token) and misses
//! its near miss (which comes out byte-identical). A last test checks that every rule
//! in the file has its test here.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use hive_cred_runtime::Redactor;

const RULES: &str = include_str!("../rules/patterns.toml");

fn rules() -> Vec<toml::Table> {
    let file: toml::Table = toml::from_str(RULES).unwrap();
    file["rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_table().unwrap().clone())
        .collect()
}

fn field(rule: &toml::Table, name: &str) -> String {
    rule[name].as_str().unwrap().to_string()
}

fn check(name: &str) {
    let rule = rules()
        .into_iter()
        .find(|r| r["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no rule {name} in rules/patterns.toml"));
    let r = Redactor::builder().detect_patterns(true).build().unwrap();
    let marker = format!("[hive:detected.{name}]");

    let example = field(&rule, "example");
    let out = r.redact(&example).into_owned();
    assert!(
        out.contains(&marker),
        "{name}: example not matched: {out:?}"
    );
    assert_eq!(out.matches("[hive:").count(), 1, "{name}: {out:?}");
    // What is left is the text around the token, never a long piece of it.
    let kept: usize = out.replace(&marker, "").len();
    assert!(
        kept < example.len() / 2 + 20,
        "{name}: too much kept: {out:?}"
    );

    let near_miss = field(&rule, "near_miss");
    assert_eq!(r.redact(&near_miss), near_miss, "{name}: near miss matched");

    // The plain redactor has the layer off.
    assert_eq!(
        Redactor::builder().build().unwrap().redact(&example),
        example
    );
}

macro_rules! rule_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*

        #[test]
        fn every_rule_in_the_file_has_a_test() {
            let mut tested = vec![$(stringify!($name)),*];
            let mut in_file: Vec<String> = rules().iter().map(|r| field(r, "name")).collect();
            tested.sort_unstable();
            in_file.sort_unstable();
            assert_eq!(in_file, tested);
        }
    };
}

rule_tests!(
    aws_access_key_id,
    github_token,
    github_pat,
    slack_token,
    openai_key,
    anthropic_key,
    google_api_key,
    stripe_live_key,
    jwt,
    private_key,
    secret_assignment,
);

#[test]
fn the_assignment_rule_keeps_the_name_and_replaces_only_the_value() {
    let r = Redactor::builder().detect_patterns(true).build().unwrap();
    assert_eq!(
        r.redact("db password=Xq7#mP2v!Lr9wZ4k ok"),
        "db password=[hive:detected.secret_assignment] ok"
    );
    assert_eq!(
        r.redact("{\"api_key\": \"Zx81Kq03Lm92Pw77\"}"),
        "{\"api_key\": \"[hive:detected.secret_assignment]\"}"
    );
    // Low-entropy and one-class values are left alone.
    for text in [
        "password=correcthorsebatterystaple",
        "secret=aaaaaaaaaaaaaaaa",
    ] {
        assert_eq!(r.redact(text), text);
    }
}

#[test]
fn detected_tokens_are_caught_across_stream_chunks() {
    let r = std::sync::Arc::new(Redactor::builder().detect_patterns(true).build().unwrap());
    let text = "key AKIAIOSFODNN7EXAMPLE and ghp_Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78 end";
    let expected = r.redact(text).into_owned();
    assert_eq!(
        expected,
        "key [hive:detected.aws_access_key_id] and [hive:detected.github_token] end"
    );
    for cut in 0..=text.len() {
        let mut s = r.stream();
        let mut out = s.push(&text[..cut]);
        out += &s.push(&text[cut..]);
        out += &s.finish();
        assert_eq!(out, expected, "split at {cut}");
    }
}
