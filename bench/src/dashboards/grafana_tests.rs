//! The expected strings were printed by `ops/checks/lib/grafana_sql.py` for
//! the same inputs, so the two expanders agree.

use super::*;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn device_all() -> Variables {
    let var = Variable {
        multi: true,
        include_all: true,
        all_value: Some("'*'".into()),
        options: Vec::new(),
    };
    Variables::from([("device".to_owned(), (var, Selection::All))])
}

#[test]
fn round_interval_follows_grafanas_steps() {
    // range / 1000 points for 1 h, 24 h, 7 d, 30 d, 1 y
    assert_eq!(round_interval_ms(3_600.0), 5_000);
    assert_eq!(round_interval_ms(86_400.0), 60_000);
    assert_eq!(round_interval_ms(604_800.0), 600_000);
    assert_eq!(round_interval_ms(2_592_000.0), 1_800_000);
    assert_eq!(round_interval_ms(31_536_000.0), 21_600_000);
    // step boundaries: below the bound the lower value, at it the next
    assert_eq!(round_interval_ms(14.0), 10);
    assert_eq!(round_interval_ms(15.0), 20);
    assert_eq!(round_interval_ms(7_499.0), 5_000);
    assert_eq!(round_interval_ms(7_500.0), 10_000);
    assert_eq!(round_interval_ms(3_628_799_999.0), 2_592_000_000);
    assert_eq!(round_interval_ms(3_628_800_000.0), YEAR_MS);
}

#[test]
fn panel_interval_is_not_below_the_minimum() {
    let at_1000 = |range| panel_interval_ms(range, 1000, DEFAULT_MIN_INTERVAL_MS);
    assert_eq!(at_1000(HOUR_MS), 60_000, "5s raised to the SQL default 1m");
    assert_eq!(at_1000(DAY_MS), 60_000);
    assert_eq!(at_1000(7 * DAY_MS), 600_000);
    assert_eq!(at_1000(30 * DAY_MS), 1_800_000);
    assert_eq!(at_1000(365 * DAY_MS), 21_600_000);
    assert_eq!(panel_interval_ms(HOUR_MS, 1000, 1_000), 5_000);
    assert_eq!(panel_interval_ms(HOUR_MS, 100, 1_000), 30_000);
    assert_eq!(panel_interval_ms(HOUR_MS, 0, 1), 3_600_000, "0 points: 1");
}

#[test]
fn interval_text_takes_the_largest_whole_unit() {
    let cases = [
        (60_000, "1m"),
        (300_000, "5m"),
        (1_800_000, "30m"),
        (3_600_000, "1h"),
        (7_200_000, "2h"),
        (86_400_000, "1d"),
        (604_800_000, "7d"),
        (2_592_000_000, "30d"),
        (31_536_000_000, "1y"),
        (1_500, "1500ms"),
        (500, "500ms"),
    ];
    for (ms, text) in cases {
        assert_eq!(interval_text(ms), text, "{ms}");
    }
}

#[test]
fn intervals_parse_with_or_without_quotes() {
    assert_eq!(parse_interval_s("1d"), Ok(86_400.0));
    assert_eq!(parse_interval_s(" '5m' "), Ok(300.0));
    assert_eq!(parse_interval_s("\"10s\""), Ok(10.0));
    assert_eq!(parse_interval_s("1.5h"), Ok(5_400.0));
    assert_eq!(parse_interval_s("250ms"), Ok(0.25));
    for bad in ["", "5", "m", "5x", "1.h", ".5m", "-5m", "5 m"] {
        assert!(parse_interval_s(bad).is_err(), "{bad:?}");
    }
}

const SQL: &str = "SELECT $__timeGroupAlias(date_time, $__interval), AVG(x) FROM t \
    WHERE $__timeFilter(date_time) AND ('*' IN ($device) OR device IN ($device)) \
    AND a < $__timeTo() AND b > $__timeFrom() AND c = $__unixEpochFrom() DIV 86400 + $__interval_ms \
    GROUP BY $__timeGroup(x, '1d', 0)";

#[test]
fn a_panel_query_with_all_devices() {
    let got = interpolate(SQL, &device_all(), 1000, 4600, 60_000).unwrap();
    assert_eq!(
        got,
        "SELECT UNIX_TIMESTAMP(date_time) DIV 60 * 60 AS \"time\", AVG(x) FROM t \
         WHERE date_time BETWEEN FROM_UNIXTIME(1000) AND FROM_UNIXTIME(4600) \
         AND ('*' IN ('*') OR device IN ('*')) AND a < FROM_UNIXTIME(4600) \
         AND b > FROM_UNIXTIME(1000) AND c = 1000 DIV 86400 + 60000 \
         GROUP BY UNIX_TIMESTAMP(x) DIV 86400 * 86400"
    );
}

#[test]
fn chosen_devices_are_quoted_and_listed() {
    let mut vars = device_all();
    if let Some(v) = vars.get_mut("device") {
        v.1 = Selection::Values(vec!["a".into(), "b'c".into()]);
    }
    let got = interpolate(SQL, &vars, 1000, 4600, 300_000).unwrap();
    assert!(got.starts_with("SELECT UNIX_TIMESTAMP(date_time) DIV 300 * 300 AS \"time\""));
    assert!(got.contains("('*' IN ('a','b''c') OR device IN ('a','b''c'))"));
    assert!(got.contains("+ 300000 GROUP"));
}

#[test]
fn variable_forms() {
    let got = interpolate(
        "${device} [[device]] ${device:csv} [[device:raw]] $devicex $__unknownVar",
        &device_all(),
        0,
        1,
        1000,
    )
    .unwrap();
    assert_eq!(got, "'*' '*' '*' '*' $devicex $__unknownVar");
}

#[test]
fn variable_formats() {
    let plain = Variable::default();
    let one = Selection::Values(vec!["it's".into()]);
    assert_eq!(format_variable("x", &plain, &one).unwrap(), "it''s");
    let two = Selection::Values(vec!["a".into(), "b".into()]);
    assert_eq!(
        format_variable("x", &plain, &two),
        Err(MacroError::SingleValued("x".into()))
    );
    let all_options = Variable {
        include_all: true,
        options: vec!["$__all".into(), "p".into(), "q".into()],
        ..Variable::default()
    };
    assert_eq!(
        format_variable("x", &all_options, &Selection::All).unwrap(),
        "'p','q'"
    );
    let no_options = Variable {
        include_all: true,
        ..Variable::default()
    };
    assert_eq!(
        format_variable("x", &no_options, &Selection::All).unwrap(),
        ""
    );
}

#[test]
fn the_other_macros() {
    let e = |sql| expand_macros(sql, 10, 20, 60_000).unwrap();
    assert_eq!(e("$__time(t)"), "UNIX_TIMESTAMP(t) as time_sec");
    assert_eq!(e("$__timeEpoch(t)"), "UNIX_TIMESTAMP(t) as time_sec");
    assert_eq!(e("$__unixEpochFilter(t)"), "t >= 10 AND t <= 20");
    assert_eq!(
        e("$__unixEpochNanoFilter(t)"),
        "t >= 10000000000 AND t <= 20000000000"
    );
    assert_eq!(e("$__unixEpochNanoFrom()"), "10000000000");
    assert_eq!(e("$__unixEpochNanoTo()"), "20000000000");
    assert_eq!(e("$__unixEpochTo()"), "20");
    assert_eq!(e("$__unixEpochGroup(t, 5m)"), "t DIV 300 * 300");
    assert_eq!(
        e("$__unixEpochGroupAlias(t,'1h', NULL)"),
        "t DIV 3600 * 3600 AS \"time\""
    );
    assert_eq!(
        e("$__timeGroup(t, 1m, previous)"),
        "UNIX_TIMESTAMP(t) DIV 60 * 60"
    );
    assert_eq!(
        e("$__timeGroup(t, 1m, -1.5)"),
        "UNIX_TIMESTAMP(t) DIV 60 * 60"
    );
    // a $ that starts no macro stays
    assert_eq!(e("a $ b $x c"), "a $ b $x c");
}

#[test]
fn what_grafana_refuses() {
    let e = |sql| interpolate(sql, &Variables::new(), 0, 1, 60_000);
    assert_eq!(
        e("$__timeFrobnicate(x)"),
        Err(MacroError::Unknown("__timeFrobnicate".into()))
    );
    assert_eq!(
        e("$__timeGroup(t)"),
        Err(MacroError::GroupArgs("__timeGroup".into()))
    );
    assert_eq!(
        e("$__timeGroup(t, 1m, zero)"),
        Err(MacroError::BadFill("zero".into()))
    );
    assert_eq!(
        e("$__timeGroup(t, 1q)"),
        Err(MacroError::BadInterval("1q".into()))
    );
    assert_eq!(
        e("$__timeFilter()"),
        Err(MacroError::NoColumn("__timeFilter".into()))
    );
    assert_eq!(
        e("$__timeFilter(CONVERT_TZ(t, 'UTC', '+00:00'))"),
        Err(MacroError::Parenthesis(
            "$__timeFilter(CONVERT_TZ(t, 'UTC', '+00:00')".into()
        ))
    );
    for sql in [
        "SELECT USER ()",
        "select current_user",
        "SHOW\n GRANTS",
        "x session_user",
    ] {
        assert_eq!(e(sql), Err(MacroError::Restricted), "{sql:?}");
    }
    for sql in ["SELECT username(1)", "SELECT users", "SHOWGRANTS"] {
        assert!(e(sql).is_ok(), "{sql:?}");
    }
}
