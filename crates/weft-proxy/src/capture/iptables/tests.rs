use super::*;

fn uid_opts() -> IptablesOptions {
    IptablesOptions {
        proxy_uid: Some(1337),
        ..IptablesOptions::default()
    }
}

/// Rules as `iptables -t nat ...` lines, which is how people read and compare them.
fn lines(opts: &IptablesOptions) -> Vec<String> {
    rules(opts).iter().map(|args| args.join(" ")).collect()
}

/// Only the rules appended to `chain`, without the `-t nat -A chain` prefix.
fn chain_rules(opts: &IptablesOptions, chain: &str) -> Vec<String> {
    let prefix = format!("-t nat -A {chain} ");
    lines(opts)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

#[test]
fn default_rules_with_proxy_uid() {
    let expected = [
        "-t nat -N WEFT_INBOUND",
        "-t nat -N WEFT_IN_REDIRECT",
        "-t nat -N WEFT_OUTPUT",
        "-t nat -N WEFT_REDIRECT",
        "-t nat -F WEFT_INBOUND",
        "-t nat -F WEFT_IN_REDIRECT",
        "-t nat -F WEFT_OUTPUT",
        "-t nat -F WEFT_REDIRECT",
        "-t nat -A WEFT_INBOUND -p tcp --dport 15008 -j RETURN",
        "-t nat -A WEFT_INBOUND -p tcp --dport 15000 -j RETURN",
        "-t nat -A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT",
        "-t nat -A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-t nat -A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-t nat -A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-t nat -A WEFT_OUTPUT -p tcp -j WEFT_REDIRECT",
        "-t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-t nat -A PREROUTING -p tcp -j WEFT_INBOUND",
        "-t nat -A OUTPUT -p tcp -j WEFT_OUTPUT",
    ];
    assert_eq!(lines(&uid_opts()), expected);
    assert_eq!(uid_opts().validate(), Ok(()));
}

#[test]
fn default_capture_ports() {
    let opts = IptablesOptions::default();
    assert_eq!(opts.inbound_capture_port, 15006);
    assert_eq!(opts.outbound_capture_port, 15001);
    assert_eq!(opts.mesh_port, 15008);
    assert_eq!(opts.admin_port, 15000);
    assert!(opts.inbound_ports.is_empty());
}

#[test]
fn mark_exclusion_instead_of_uid() {
    let opts = IptablesOptions {
        proxy_mark: Some(0x539),
        ..IptablesOptions::default()
    };
    assert_eq!(opts.validate(), Ok(()));
    let out = chain_rules(&opts, OUTPUT_CHAIN);
    assert_eq!(out[0], "-m mark --mark 0x539 -j RETURN");
    assert!(!out.iter().any(|r| r.contains("--uid-owner")));
}

#[test]
fn uid_gid_and_mark_all_excluded_before_redirect() {
    let opts = IptablesOptions {
        proxy_uid: Some(1337),
        proxy_gid: Some(1338),
        proxy_mark: Some(7),
        ..IptablesOptions::default()
    };
    let out = chain_rules(&opts, OUTPUT_CHAIN);
    assert_eq!(
        out,
        [
            "-m owner --uid-owner 1337 -j RETURN",
            "-m owner --gid-owner 1338 -j RETURN",
            "-m mark --mark 0x7 -j RETURN",
            "-d 127.0.0.0/8 -j RETURN",
            "-p tcp -j WEFT_REDIRECT",
        ]
    );
}

#[test]
fn skip_ports_and_cidrs_return_before_redirect() {
    let opts = IptablesOptions {
        skip_inbound_ports: vec![22],
        skip_outbound_ports: vec![5432, 6379],
        skip_outbound_cidrs: vec!["10.96.0.0/12".into(), "169.254.169.254".into()],
        ..uid_opts()
    };
    assert_eq!(opts.validate(), Ok(()));
    assert_eq!(
        chain_rules(&opts, INBOUND_CHAIN),
        [
            "-p tcp --dport 15008 -j RETURN",
            "-p tcp --dport 15000 -j RETURN",
            "-p tcp --dport 22 -j RETURN",
            "-p tcp -j WEFT_IN_REDIRECT",
        ]
    );
    assert_eq!(
        chain_rules(&opts, OUTPUT_CHAIN),
        [
            "-m owner --uid-owner 1337 -j RETURN",
            "-d 127.0.0.0/8 -j RETURN",
            "-p tcp --dport 5432 -j RETURN",
            "-p tcp --dport 6379 -j RETURN",
            "-d 10.96.0.0/12 -j RETURN",
            "-d 169.254.169.254 -j RETURN",
            "-p tcp -j WEFT_REDIRECT",
        ]
    );
}

#[test]
fn explicit_inbound_ports_capture_only_those() {
    let opts = IptablesOptions {
        inbound_ports: vec![9080, 9090],
        inbound_capture_port: 16006,
        ..uid_opts()
    };
    let inbound = chain_rules(&opts, INBOUND_CHAIN);
    assert_eq!(
        inbound[2..],
        [
            "-p tcp --dport 9080 -j WEFT_IN_REDIRECT",
            "-p tcp --dport 9090 -j WEFT_IN_REDIRECT",
        ]
    );
    assert!(!inbound.contains(&"-p tcp -j WEFT_IN_REDIRECT".to_owned()));
    assert_eq!(
        chain_rules(&opts, IN_REDIRECT_CHAIN),
        ["-p tcp -j REDIRECT --to-ports 16006"]
    );
}

#[test]
fn mesh_and_admin_ports_are_never_captured_inbound() {
    let opts = IptablesOptions {
        mesh_port: 16008,
        admin_port: 16000,
        ..uid_opts()
    };
    let inbound = chain_rules(&opts, INBOUND_CHAIN);
    assert_eq!(inbound[0], "-p tcp --dport 16008 -j RETURN");
    assert_eq!(inbound[1], "-p tcp --dport 16000 -j RETURN");
}

#[test]
fn validation_reports_every_problem_at_once() {
    let opts = IptablesOptions {
        inbound_capture_port: 0,
        outbound_capture_port: 0,
        skip_outbound_ports: vec![443, 0],
        skip_outbound_cidrs: vec![
            "10.0.0.0/8".into(),
            "10.0.0.0/33".into(),
            "not-a-cidr".into(),
            "fd00::/8".into(),
        ],
        ..IptablesOptions::default()
    };
    let err = opts.validate().expect_err("invalid options");
    assert_eq!(
        err.problems,
        [
            OptionProblem::ZeroPort {
                field: "inbound_capture_port"
            },
            OptionProblem::ZeroPort {
                field: "outbound_capture_port"
            },
            OptionProblem::NoProxyExclusion,
            OptionProblem::ZeroPort {
                field: "skip_outbound_ports"
            },
            OptionProblem::BadCidr {
                value: "10.0.0.0/33".into()
            },
            OptionProblem::BadCidr {
                value: "not-a-cidr".into()
            },
            OptionProblem::BadCidr {
                value: "fd00::/8".into()
            },
        ]
    );
    let message = err.to_string();
    assert!(message.contains("inbound_capture_port"), "{message}");
    assert!(message.contains("not-a-cidr"), "{message}");
}

#[test]
fn apply_refuses_invalid_options_without_running_anything() {
    // The binary does not exist: reaching it would give a Spawn error instead.
    let err = apply(&IptablesOptions::default(), "/nonexistent/iptables").expect_err("invalid");
    assert!(matches!(err, IptablesError::InvalidOptions(_)), "{err}");
}

#[test]
fn missing_binary_is_a_spawn_error_naming_the_command() {
    let err = apply(&uid_opts(), "/nonexistent/iptables").expect_err("no binary");
    match err {
        IptablesError::Spawn { command, .. } => {
            assert!(command.starts_with("/nonexistent/iptables -t nat"), "{command}");
        }
        other => panic!("expected Spawn, got {other}"),
    }
}

#[test]
fn script_checks_before_creating_chains_and_jumps() {
    let script = script(&uid_opts());
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script
        .contains("iptables -t nat -S WEFT_INBOUND >/dev/null 2>&1 || iptables -t nat -N WEFT_INBOUND\n"));
    assert!(script.contains("iptables -t nat -F WEFT_OUTPUT\n"));
    assert!(script.contains(
        "iptables -t nat -C OUTPUT -p tcp -j WEFT_OUTPUT 2>/dev/null \
         || iptables -t nat -A OUTPUT -p tcp -j WEFT_OUTPUT\n"
    ));
    assert!(script.contains("iptables -t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"));
}
