//! Table tests: real MLflow filter strings, the OR/parentheses extension, errors.

use capstan_search::{
    parse_filter, parse_filter_for, parse_order_by, parse_order_by_for, Comparison, Entity, Expr, Op, OrderBy,
    ParseError, SearchTarget, Value,
};

fn cmp(entity: Entity, key: &str, op: Op, value: Value) -> Expr {
    Expr::Cmp(Comparison { entity, key: key.to_string(), op, value })
}
fn metric(key: &str, op: Op, n: f64) -> Expr {
    cmp(Entity::Metric, key, op, Value::Number(n))
}
fn param(key: &str, op: Op, s: &str) -> Expr {
    cmp(Entity::Param, key, op, Value::String(s.into()))
}
fn tag(key: &str, op: Op, s: &str) -> Expr {
    cmp(Entity::Tag, key, op, Value::String(s.into()))
}
fn attr(key: &str, op: Op, s: &str) -> Expr {
    cmp(Entity::Attribute, key, op, Value::String(s.into()))
}
fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| s.to_string()).collect())
}

fn parse(s: &str) -> Expr {
    match parse_filter(s) {
        Ok(Some(e)) => e,
        other => panic!("{s:?} did not parse to a filter: {other:?}"),
    }
}

fn parse_err(s: &str) -> ParseError {
    match parse_filter(s) {
        Err(e) => e,
        Ok(e) => panic!("{s:?} parsed but should not have: {e:?}"),
    }
}

/// Parses, checks the AST, and checks that the canonical form parses back to it.
#[track_caller]
fn check(s: &str, want: Expr) {
    let got = parse(s);
    assert_eq!(got, want, "{s}");
    let canonical = got.to_string();
    assert_eq!(parse(&canonical), got, "canonical form {canonical:?} of {s:?}");
}

/// The MLflow documentation's examples (search-runs, search-experiments, model registry).
#[test]
fn mlflow_documented_filters() {
    use Op::*;
    let table: Vec<(&str, Expr)> = vec![
        ("metrics.rmse < 1", metric("rmse", Lt, 1.0)),
        (
            "metrics.rmse < 1 and params.model = 'tree'",
            Expr::And(vec![metric("rmse", Lt, 1.0), param("model", Eq, "tree")]),
        ),
        ("metrics.accuracy > 0.92", metric("accuracy", Gt, 0.92)),
        (
            r#"params.model = "LogisticRegression" and params.lambda = "0.001" and metrics.error <= 0.05"#,
            Expr::And(vec![
                param("model", Eq, "LogisticRegression"),
                param("lambda", Eq, "0.001"),
                metric("error", Le, 0.05),
            ]),
        ),
        (r#"attributes.status = "FAILED""#, attr("status", Eq, "FAILED")),
        ("attributes.status = 'FINISHED'", attr("status", Eq, "FINISHED")),
        (r#"tags."mlflow.runName" = 'x'"#, tag("mlflow.runName", Eq, "x")),
        (r#"tags."mlflow.runName" = "keras-hyperparam-search""#, tag("mlflow.runName", Eq, "keras-hyperparam-search")),
        ("tags.mlflow.runName = 'x'", tag("mlflow.runName", Eq, "x")),
        (r#"params."model-type" = 'cnn'"#, param("model-type", Eq, "cnn")),
        (r#"metrics."error rate" < 0.1"#, metric("error rate", Lt, 0.1)),
        (r#"metrics."2019-04-02 error rate" < 0.1"#, metric("2019-04-02 error rate", Lt, 0.1)),
        (
            "params.model = 'CNN' and params.layers = '10' and metrics.'prediction accuracy' >= 0.945",
            Expr::And(vec![
                param("model", Eq, "CNN"),
                param("layers", Eq, "10"),
                metric("prediction accuracy", Ge, 0.945),
            ]),
        ),
        ("run_name LIKE 'exp%'", attr("run_name", Like, "exp%")),
        ("attributes.run_name = 'my-run'", attr("run_name", Eq, "my-run")),
        ("attributes.`run name` = 'my-run'", attr("run_name", Eq, "my-run")),
        (r#""Run Name" ILIKE '%RUN%'"#, attr("run_name", ILike, "%RUN%")),
        ("metrics.`f1 score` >= 0.5", metric("f1 score", Ge, 0.5)),
        ("attributes.run_id IN ('abc','def')", cmp(Entity::Attribute, "run_id", In, list(&["abc", "def"]))),
        ("params.p NOT IN ('1')", cmp(Entity::Param, "p", NotIn, list(&["1"]))),
        ("tags.x IN ('1','2')", cmp(Entity::Tag, "x", In, list(&["1", "2"]))),
        ("tags.t IS NULL", cmp(Entity::Tag, "t", IsNull, Value::Null)),
        ("params.p is not null", cmp(Entity::Param, "p", IsNotNull, Value::Null)),
        ("metrics.m IS NULL", cmp(Entity::Metric, "m", IsNull, Value::Null)),
        ("params.model LIKE 'GPT%'", param("model", Like, "GPT%")),
        ("params.model ILIKE '%gpt%'", param("model", ILike, "%gpt%")),
        ("tags.environment != 'notebook'", tag("environment", Ne, "notebook")),
        ("tags.task LIKE '%class_fication'", tag("task", Like, "%class_fication")),
        ("attributes.start_time > 1700000000000", cmp(Entity::Attribute, "start_time", Gt, Value::Number(1.7e12))),
        ("created >= 1700000000000", cmp(Entity::Attribute, "start_time", Ge, Value::Number(1.7e12))),
        ("attribute.end_time <= 5", cmp(Entity::Attribute, "end_time", Le, Value::Number(5.0))),
        ("attr.user_id = 'alice'", attr("user_id", Eq, "alice")),
        ("run.artifact_uri LIKE 's3://%'", attr("artifact_uri", Like, "s3://%")),
        ("status = 'RUNNING'", attr("status", Eq, "RUNNING")),
        ("lifecycle_stage = 'active'", attr("lifecycle_stage", Eq, "active")),
        ("datasets.name LIKE 'custom%'", cmp(Entity::Dataset, "name", Like, Value::String("custom%".into()))),
        (
            "dataset.digest IN ('s8ds293b', 'jks834s2')",
            cmp(Entity::Dataset, "digest", In, list(&["s8ds293b", "jks834s2"])),
        ),
        ("datasets.context = 'train'", cmp(Entity::Dataset, "context", Eq, Value::String("train".into()))),
        ("metric.loss < -1.5e-3", metric("loss", Lt, -1.5e-3)),
        ("metrics.loss != +2", metric("loss", Ne, 2.0)),
        ("metrics.loss = .5", metric("loss", Eq, 0.5)),
        ("metrics.loss = 5.", metric("loss", Eq, 5.0)),
        ("metrics.loss = 1E6", metric("loss", Eq, 1e6)),
        ("metrics.train/loss < 1", metric("train/loss", Lt, 1.0)),
        ("metrics.val-loss<1", metric("val-loss", Lt, 1.0)),
        ("metrics.a>-1", metric("a", Gt, -1.0)),
        ("param.p = 'x'", param("p", Eq, "x")),
        ("parameters.p = 'x'", param("p", Eq, "x")),
        ("tag.t = 'x'", tag("t", Eq, "x")),
        ("METRICS.a = 1", metric("a", Eq, 1.0)),
        ("params.p = 'it''s'", param("p", Eq, "it's")),
        (r#"params.p = "say ""hi""""#, param("p", Eq, "say \"hi\"")),
        ("metrics.`a``b` = 1", metric("a`b", Eq, 1.0)),
        ("params.p = ''", param("p", Eq, "")),
        ("params.p = 'ünï cödé ✓'", param("p", Eq, "ünï cödé ✓")),
        ("metrics.précision > 0.5", metric("précision", Gt, 0.5)),
        ("  metrics.a = 1  ", metric("a", Eq, 1.0)),
        ("\tmetrics.a\n=\n1\r\n", metric("a", Eq, 1.0)),
        ("metrics.a=1 AND params.b='x'", Expr::And(vec![metric("a", Eq, 1.0), param("b", Eq, "x")])),
    ];
    for (s, want) in table {
        check(s, want);
    }
}

#[test]
fn or_and_parentheses() {
    use Op::*;
    let a = || metric("a", Gt, 1.0);
    let b = || param("b", Eq, "x");
    let c = || tag("c", Ne, "y");
    check("metrics.a > 1 OR (params.b = 'x' AND tags.c != 'y')", Expr::Or(vec![a(), Expr::And(vec![b(), c()])]));
    // AND binds tighter than OR.
    let or_of_and = Expr::Or(vec![a(), Expr::And(vec![b(), c()])]);
    check("metrics.a > 1 OR params.b = 'x' AND tags.c != 'y'", or_of_and.clone());
    check("metrics.a > 1 or params.b = 'x' and tags.c != 'y'", or_of_and);
    check("metrics.a > 1 AND params.b = 'x' OR tags.c != 'y'", Expr::Or(vec![Expr::And(vec![a(), b()]), c()]));
    check("(metrics.a > 1 OR params.b = 'x') AND tags.c != 'y'", Expr::And(vec![Expr::Or(vec![a(), b()]), c()]));
    // Chains and redundant parentheses are flattened.
    check("metrics.a > 1 AND (params.b = 'x' AND tags.c != 'y')", Expr::And(vec![a(), b(), c()]));
    check("(metrics.a > 1 OR params.b = 'x') OR tags.c != 'y'", Expr::Or(vec![a(), b(), c()]));
    check("((((metrics.a > 1))))", a());
    check("(metrics.a>1)OR(params.b='x')", Expr::Or(vec![a(), b()]));
    check(
        "params.b = 'x' OR metrics.a > 1 AND (tags.c != 'y' OR params.b = 'x') AND metrics.a > 1",
        Expr::Or(vec![b(), Expr::And(vec![a(), Expr::Or(vec![c(), b()]), a()])]),
    );
    // The canonical form.
    assert_eq!(
        parse("metric.a>1 or (param.b=\"x\" and tag.c!='y')").to_string(),
        "metrics.a > 1 OR params.b = 'x' AND tags.c != 'y'"
    );
    assert_eq!(
        parse("(metrics.a > 1 or params.b = 'x') and tags.`c d` in ('1', '2')").to_string(),
        "(metrics.a > 1 OR params.b = 'x') AND tags.`c d` IN ('1', '2')"
    );
    assert_eq!(
        parse("created > 1e20 and metrics.x = 0.00000123 and status = 'A'").to_string(),
        "attributes.start_time > 1e20 AND metrics.x = 1.23e-6 AND attributes.status = 'A'"
    );
}

#[test]
fn empty_input_is_no_filter() {
    assert_eq!(parse_filter(""), Ok(None));
    assert_eq!(parse_filter("   \n\t "), Ok(None));
}

#[track_caller]
fn check_err(s: &str, column: usize, message: &str) {
    let e = parse_err(s);
    assert_eq!((e.column, e.message.as_str()), (column, message), "error for {s:?}");
    // position is the byte offset of the same place.
    assert_eq!(s[..e.position].chars().count() + 1, e.column);
    assert_eq!(e.to_string(), format!("at column {column}: {message}"));
}

#[test]
fn errors_with_exact_columns() {
    check_err(
        "params.model = 'x' AND metrics.rmse foo 1",
        37,
        "expected a comparison operator (=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN, IS NULL, \
         IS NOT NULL), found 'foo'",
    );
    check_err(
        "metrics.x LIKE 'a'",
        11,
        "LIKE is not supported for metrics (metrics are numbers); use =, !=, >, >=, <, <=, IS \
         NULL or IS NOT NULL",
    );
    check_err(
        "params.p > 'a'",
        10,
        "> is not supported for params (MLflow compares params as strings); use =, !=, LIKE, \
         ILIKE, IN, NOT IN, IS NULL or IS NOT NULL",
    );
    check_err(
        "tags.t <= 'a'",
        8,
        "<= is not supported for tags (MLflow compares tags as strings); use =, !=, LIKE, ILIKE, \
         IN, NOT IN, IS NULL or IS NOT NULL",
    );
    check_err(
        "attributes.nope = 'x'",
        12,
        "unknown attribute 'nope'; valid attributes are: run_id, run_name, status, start_time, \
         end_time, artifact_uri, user_id, lifecycle_stage",
    );
    check_err(
        "rmse < 1",
        1,
        "unknown attribute 'rmse'; valid attributes are: run_id, run_name, status, start_time, \
         end_time, artifact_uri, user_id, lifecycle_stage (a name without a prefix is an \
         attribute; did you mean metrics.rmse or params.rmse or tags.rmse?)",
    );
    check_err(
        "attributes.status > 'a'",
        19,
        "> is not supported for the string attribute 'status' (it holds a string); use =, !=, \
         LIKE, ILIKE, IN or NOT IN",
    );
    check_err(
        "attributes.start_time LIKE '1%'",
        23,
        "LIKE is not supported for the numeric attribute 'start_time' (it holds a number); use \
         =, !=, >, >=, < or <=",
    );
    check_err(
        "attributes.end_time IS NULL",
        21,
        "IS NULL is not supported for the numeric attribute 'end_time' (IS NULL is only \
         supported for metrics, params and tags); use =, !=, >, >=, < or <=",
    );
    check_err("params.p = 'abc", 12, "unterminated string: no closing ' for the ' here");
    check_err("metrics.a > 1 and params.p = \"abc", 30, "unterminated string: no closing \" for the \" here");
    check_err("metrics.`abc = 1", 9, "unterminated quoted key: no closing ` for the ` here");
    check_err("metrics.`` = 1", 9, "empty key after 'metrics.'");
    check_err("metrics. = 1", 9, "expected a key after 'metrics.', found ' '");
    check_err("metrics.a = 1 garbage", 15, "expected AND, OR or end of input, found 'garbage'");
    check_err("metrics.a = 1)", 14, "unexpected ')': no '(' is open");
    check_err("(metrics.a = 1", 15, "expected AND, OR or ')' to close the '(' at column 1, found end of input");
    check_err(
        "metrics.a = 1 AND",
        18,
        "expected a filter clause such as metrics.acc > 0.9 or params.model = 'tree', found end \
         of input",
    );
    check_err(
        "metrics.a = 1 AND AND metrics.b = 2",
        19,
        "expected a filter clause such as metrics.acc > 0.9 or params.model = 'tree', found \
         'AND'",
    );
    check_err("()", 2, "expected a filter clause such as metrics.acc > 0.9 or params.model = 'tree', found ')'");
    check_err(
        "metrics.a > '1'",
        13,
        "Metrics compare numerically: expected a number, found the string '1' (remove the quotes)",
    );
    check_err(
        "attributes.start_time > 'yesterday'",
        25,
        "The numeric attribute 'start_time' compare numerically: expected a number, found the \
         string 'yesterday'",
    );
    check_err("params.p = 1", 12, "Params hold strings: expected a quoted string (e.g. '1'), found 1");
    check_err(
        "params.model = tree",
        16,
        "expected a value (a number or a quoted string), found 'tree'; quote strings, e.g. 'tree'",
    );
    check_err("params.p = NULL", 12, "'= NULL' is not supported; use IS NULL");
    check_err("params.p != null", 13, "'!= NULL' is not supported; use IS NOT NULL");
    check_err(
        "foo.bar = 1",
        1,
        "unknown entity type 'foo'; expected one of: metrics, params, tags, attributes, \
         datasets (e.g. metrics.<key>)",
    );
    check_err("datasets.size = 'x'", 10, "unknown dataset field 'size'; valid fields are name, digest, context");
    check_err("metrics.a == 1", 11, "unknown operator '=='; use '='");
    check_err("metrics.a <> 1", 11, "unknown operator '<>'; use '!='");
    check_err(
        "params.p NOT LIKE 'a'",
        14,
        "expected IN after NOT (NOT is only supported in NOT IN and IS NOT NULL), found 'LIKE'",
    );
    check_err("params.p IS 'a'", 13, "expected NULL or NOT NULL after IS, found the string 'a'");
    check_err(
        "params.p IN 'a'",
        13,
        "expected a parenthesised list of quoted strings after IN, e.g. ('a', 'b'), found the \
         string 'a'",
    );
    check_err("params.p IN ()", 14, "the list after IN cannot be empty");
    check_err("params.p IN ('a',)", 18, "expected a quoted string in the IN list, found ')'");
    check_err("params.p NOT IN ('a' 'b')", 22, "expected ',' or ')' in the NOT IN list, found the string 'b'");
    check_err("attributes.run_id IN (1, 2)", 23, "expected a quoted string in the IN list, found '1'");
    check_err("metrics.a > 1.2.3", 13, "invalid number '1.2.3'");
    check_err("metrics.a > 1e", 13, "invalid number '1e'");
    check_err("metrics.a > 1abc", 13, "invalid number '1abc'");
    check_err("metrics.a > -", 13, "invalid number '-'");
    check_err("metrics.a > 1e999", 13, "number out of range: 1e999");
    check_err(
        "'x' = params.p",
        1,
        "expected a filter clause such as metrics.acc > 0.9 or params.model = 'tree', found the \
         string 'x'",
    );
    // Columns count characters, positions bytes.
    let e = parse_err("params.é = 'é' foo");
    assert_eq!((e.position, e.column), (17, 16));
}

#[test]
fn targets_other_than_runs() {
    use Op::*;
    let exp = |s| parse_filter_for(SearchTarget::Experiments, s);
    assert_eq!(
        exp("name LIKE 'prod%' AND tags.team = 'ml'").unwrap().unwrap(),
        Expr::And(vec![attr("name", Like, "prod%"), tag("team", Eq, "ml")])
    );
    assert_eq!(
        exp("attributes.creation_time > 5").unwrap().unwrap(),
        cmp(Entity::Attribute, "creation_time", Gt, Value::Number(5.0))
    );
    let e = exp("metrics.a > 1").unwrap_err();
    assert_eq!(e.message, "metrics cannot be used when searching experiments; use one of: attributes, tags");
    let e = exp("experiment_id = '1'").unwrap_err();
    assert!(e.message.starts_with("attribute 'experiment_id' can only be used in order_by"), "{e}");

    let rm = |s| parse_filter_for(SearchTarget::RegisteredModels, s);
    assert_eq!(
        rm("name = 'm' OR tags.`k` = 'v'").unwrap().unwrap(),
        Expr::Or(vec![attr("name", Eq, "m"), tag("k", Eq, "v")])
    );
    let mv = |s| parse_filter_for(SearchTarget::ModelVersions, s);
    assert_eq!(
        mv("name = 'm' AND version_number >= 3 AND run_id IN ('a')").unwrap().unwrap(),
        Expr::And(vec![
            attr("name", Eq, "m"),
            cmp(Entity::Attribute, "version_number", Ge, Value::Number(3.0)),
            cmp(Entity::Attribute, "run_id", In, list(&["a"])),
        ])
    );
    assert!(mv("source_path LIKE 's3://%'").is_ok());
    let e = mv("status = 'READY'").unwrap_err();
    assert_eq!(
        e.message,
        "unknown attribute 'status'; valid attributes are: name, version_number, run_id, \
         source_path (a name without a prefix is an attribute; did you mean tags.status?)"
    );
}

#[test]
fn limits() {
    // 100 levels of parentheses are fine, 101 are not (and nothing overflows the stack).
    let nested = |n: usize| format!("{}metrics.a > 1{}", "(".repeat(n), ")".repeat(n));
    assert!(parse_filter(&nested(100)).is_ok());
    let e = parse_filter(&nested(101)).unwrap_err();
    assert_eq!(e.position, 100);
    assert_eq!(e.message, "parentheses are nested too deeply (the limit is 100 levels)");
    let e = parse_filter(&"(".repeat(90_000)).unwrap_err();
    assert_eq!(e.position, 100);

    // Long but within the limit: a long AND chain.
    let clause = "metrics.a > 1 AND ";
    let mut long = clause.repeat(99_900 / clause.len());
    long.push_str("metrics.b < 2");
    assert!(long.len() <= 100_000);
    match parse_filter(&long).unwrap().unwrap() {
        Expr::And(v) => assert_eq!(v.len(), 99_900 / clause.len() + 1),
        other => panic!("{other:?}"),
    }
    let too_long = format!("params.p = '{}'", "x".repeat(100_000));
    let e = parse_filter(&too_long).unwrap_err();
    assert_eq!((e.position, e.column), (0, 1));
    assert_eq!(e.message, format!("filter is too long: {} bytes (the limit is 100000)", too_long.len()));
}

#[test]
fn order_by() {
    let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ob = |entity, key: &str, ascending| OrderBy { entity, key: key.to_string(), ascending };
    assert_eq!(
        parse_order_by(&items(&[
            "metrics.acc DESC",
            "params.p",
            "attributes.start_time ASC",
            "start_time",
            "metrics.`val loss` desc",
            "tags.\"mlflow.runName\" asc",
            "  created   DESC  ",
            "attr.experiment_id",
        ]))
        .unwrap(),
        vec![
            ob(Entity::Metric, "acc", false),
            ob(Entity::Param, "p", true),
            ob(Entity::Attribute, "start_time", true),
            ob(Entity::Attribute, "start_time", true),
            ob(Entity::Metric, "val loss", false),
            ob(Entity::Tag, "mlflow.runName", true),
            ob(Entity::Attribute, "start_time", false),
            ob(Entity::Attribute, "experiment_id", true),
        ]
    );
    assert_eq!(parse_order_by(&[]).unwrap(), vec![]);
    // Display round-trips.
    for o in parse_order_by(&items(&["metrics.`val loss` desc", "params.p"])).unwrap() {
        assert_eq!(parse_order_by(&[o.to_string()]).unwrap(), vec![o]);
    }

    let err = |v: &[&str]| parse_order_by(&items(v)).unwrap_err();
    let e = err(&["metrics.acc", "metrics.acc sideways"]);
    assert_eq!(
        (e.column, e.message.as_str()),
        (13, "order_by[1]: expected ASC, DESC or the end of the entry, found 'sideways'")
    );
    let e = err(&["metrics.a DESC, params.b"]);
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            15,
            "order_by[0]: expected the end of the entry, found ','; give each ordering as its \
             own order_by entry"
        )
    );
    let e = err(&[""]);
    assert_eq!(e.message, "order_by[0]: empty order_by entry: expected a key such as metrics.acc or start_time");
    let e = err(&["datasets.name"]);
    assert_eq!(
        e.message,
        "order_by[0]: datasets cannot be used in order_by when searching runs; use one of: \
         metrics, params, tags, attributes"
    );
    let e = err(&["nope DESC"]);
    assert!(e.message.starts_with("order_by[0]: unknown attribute 'nope'"), "{e}");

    let exp =
        parse_order_by_for(SearchTarget::Experiments, &items(&["last_update_time DESC", "experiment_id"])).unwrap();
    assert_eq!(
        exp,
        vec![ob(Entity::Attribute, "last_update_time", false), ob(Entity::Attribute, "experiment_id", true)]
    );
    let rm = parse_order_by_for(SearchTarget::RegisteredModels, &items(&["timestamp DESC"])).unwrap();
    assert_eq!(rm, vec![ob(Entity::Attribute, "creation_timestamp", false)]);
    assert!(parse_order_by_for(SearchTarget::ModelVersions, &items(&["tags.x"])).is_err());
}

#[test]
fn normalized_and_display_of_hand_built_trees() {
    let a = || metric("a", Op::Gt, 1.0);
    let b = || param("b", Op::Eq, "x");
    let c = || tag("c", Op::Ne, "y");
    // A one-child OR around an OR inside an AND still gets its parentheses.
    let e = Expr::And(vec![Expr::Or(vec![Expr::Or(vec![a(), b()])]), c()]);
    assert_eq!(e.to_string(), "(metrics.a > 1 OR params.b = 'x') AND tags.c != 'y'");
    assert_eq!(parse(&e.to_string()), e.clone().normalized());
    assert_eq!(e.normalized(), Expr::And(vec![Expr::Or(vec![a(), b()]), c()]));
    // Nested ANDs are shown grouped and parse back flattened.
    let e = Expr::And(vec![Expr::And(vec![a(), b()]), c()]);
    assert_eq!(e.to_string(), "(metrics.a > 1 AND params.b = 'x') AND tags.c != 'y'");
    assert_eq!(parse(&e.to_string()), e.normalized());
    assert_eq!(Expr::And(vec![a()]).normalized(), a());
    assert_eq!(Expr::And(vec![]).to_string(), "()");
    // comparisons() lists clauses left to right.
    let e = parse("metrics.a > 1 OR (params.b IN ('x') AND tags.c IS NULL)");
    let keys: Vec<&str> = e.comparisons().iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}
