//! Property tests of the statement parser: any text a client sends gets statements
//! or an error, never a panic (a panic would drop the connection mid-protocol).
use proptest::prelude::*;

use crate::statements::split_and_parse;

/// Words and symbols our statements are made of, so generated text reaches deep
/// into the grammar rather than failing at the first token.
const WORDS: &[&str] = &[
    "CREATE",
    "TABLE",
    "IF",
    "NOT",
    "EXISTS",
    "DROP",
    "TRUNCATE",
    "ALTER",
    "PARTITION",
    "BY",
    "LIST",
    "WHERE",
    "TIMESTAMP",
    "DAY",
    "HOUR",
    "WEEK",
    "MONTH",
    "YEAR",
    "NONE",
    "SYMBOL",
    "DOUBLE",
    "PRECISION",
    "VARCHAR",
    "INT",
    "LONG",
    "BOOLEAN",
    "DATE",
    "BACKUP",
    "DATABASE",
    "WAIT",
    "ESTIMATE",
    "ABORT",
    "RESTORE",
    "FROM",
    "LATEST",
    "AS",
    "WITH",
    "policy",
    "VERIFY",
    "CHECKPOINT",
    "RELEASE",
    "COPY",
    "STDIN",
    "FORMAT",
    "csv",
    "HEADER",
    "true",
    "AND",
    "OR",
    "ts",
    "t",
    "trades",
    "(",
    ")",
    ",",
    ";",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "'2024-01-15'",
    "'replace'",
    "'fail'",
    "'x",
    "\"q\"",
    "''",
    "-1",
    "99999999999999999999",
    "1e309",
    "$1",
    "::",
    "--",
    "/*",
    "*/",
    "\\",
    "é",
    "\u{0}",
    "\u{202e}",
];

fn statement_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..24).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn grammar_words_in_any_order(text in statement_like()) {
        let _ = split_and_parse(&text);
    }

    #[test]
    fn any_text(text in ".{0,200}") {
        let _ = split_and_parse(&text);
    }

    #[test]
    fn valid_statements_cut_anywhere(cut in 0usize..400, which in 0usize..6) {
        let valid = [
            "CREATE TABLE IF NOT EXISTS trades (ts TIMESTAMP, s SYMBOL, p DOUBLE) TIMESTAMP(ts) PARTITION BY DAY",
            "ALTER TABLE trades DROP PARTITION WHERE ts >= '2024-01-01' AND ts < '2024-02-01'",
            "RESTORE TABLE trades FROM BACKUP '2024-08-24T12:34:56.789123Z' AS t2 WHERE ts < '2024-06-01' WITH (policy = 'replace')",
            "BACKUP DATABASE WAIT; BACKUP ABORT; VERIFY BACKUP LATEST",
            "ALTER TABLE trades DROP PARTITION LIST '2024-01-15', '2024-01-16'",
            "COPY trades FROM STDIN WITH (FORMAT csv, HEADER true)",
        ];
        let text = valid[which];
        prop_assert!(split_and_parse(text).is_ok(), "{}", text);
        let end = text.char_indices().map(|(i, _)| i).take_while(|&i| i <= cut).last().unwrap_or(0);
        let _ = split_and_parse(&text[..end]);
    }
}
