//! Every vector in ../shared/VERIFICATION.md, and for every scheme: valid, tampered body, wrong
//! secret, stale and future timestamps, missing and malformed header, rotation.

use std::time::Duration;

use greenflash_bridge::inbound::{Headers, Request};
use greenflash_bridge::units::TimeFormat;
use greenflash_bridge::verify::{
    Algorithm, Encoding, HmacOptions, Rejection, Scheme, SecretEncoding, Spec, Verifier,
    parse_message,
};

fn verifier(spec: &Spec, secrets: &str) -> Verifier {
    Verifier::from_spec(spec, |_| Some(secrets.to_string())).expect("secret resolves")
}

fn spec(scheme: Scheme) -> Spec {
    let mut s = Spec::new(scheme);
    s.secrets_env = Some("SECRET".into());
    s
}

fn check(
    v: &Verifier,
    method: &str,
    url: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Result<Option<usize>, Rejection> {
    let mut h = Headers::new();
    for (k, val) in headers {
        h.insert(k, *val);
    }
    let request = Request {
        method,
        url,
        headers: &h,
        body,
    };
    v.verify(&request, now).map(|ok| ok.secret_index)
}

// ---- published vectors ----

#[test]
fn standard_webhooks_library_vector() {
    let v = verifier(
        &spec(Scheme::StandardWebhooks),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &headers,
            br#"{"test": 2432232314}"#,
            1614265330
        ),
        Ok(Some(0))
    );
    // Svix sends the same values under svix-* names.
    let v = verifier(
        &spec(Scheme::Svix),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let svix = headers.map(|(k, val)| (k.replacen("webhook", "svix", 1), val));
    let svix: Vec<(&str, &str)> = svix.iter().map(|(k, val)| (k.as_str(), *val)).collect();
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &svix,
            br#"{"test": 2432232314}"#,
            1614265330
        ),
        Ok(Some(0))
    );
}

#[test]
fn github_docs_and_octokit_vectors() {
    let v = verifier(&spec(Scheme::Github), "It's a Secret to Everybody");
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("X-Hub-Signature-256", sig)],
            b"Hello, World!",
            0
        ),
        Ok(Some(0))
    );
    let v = verifier(&spec(Scheme::Github), "mysecret");
    let sig = "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("x-hub-signature-256", sig)],
            br#"{"foo":"bar"}"#,
            0
        ),
        Ok(Some(0))
    );
}

const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

#[test]
fn slack_docs_vector() {
    let v = verifier(&spec(Scheme::Slack), "8f742231b10e8888abcd99yyyzzz85a5");
    let headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &headers,
            SLACK_BODY.as_bytes(),
            1531420618
        ),
        Ok(Some(0))
    );
}

#[test]
fn paddle_sdk_vector_with_a_dummy_first_h1() {
    let v = verifier(
        &spec(Scheme::Paddle),
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh",
    );
    let header = "ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("Paddle-Signature", header)],
            b"hello-world",
            1696195954
        ),
        Ok(Some(0))
    );
}

#[test]
fn hubspot_v1_v2_and_v3_vectors() {
    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    let body_v1 = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    let v1 = verifier(&spec(Scheme::HubspotV1), SECRET);
    let sig = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
    assert_eq!(
        check(
            &v1,
            "POST",
            None,
            &[("X-HubSpot-Signature", sig)],
            body_v1.as_bytes(),
            0
        ),
        Ok(Some(0))
    );

    let url = "https://www.example.com/webhook_uri";
    let mut s2 = spec(Scheme::HubspotV2);
    s2.url = Some(url.into());
    let v2 = verifier(&s2, SECRET);
    let get = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
    assert_eq!(
        check(&v2, "GET", None, &[("X-HubSpot-Signature", get)], b"", 0),
        Ok(Some(0))
    );
    let post = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";
    assert_eq!(
        check(
            &v2,
            "POST",
            None,
            &[("X-HubSpot-Signature", post)],
            br#"{"example_field":"example_value"}"#,
            0
        ),
        Ok(Some(0))
    );

    let mut s3 = spec(Scheme::HubspotV3);
    s3.url = Some(url.into());
    let v3 = verifier(&s3, SECRET);
    let headers = [
        (
            "X-HubSpot-Signature-v3",
            "rQEKkaNUiu+1qGF//O/pw4BCzstSqO1PyUnGICmf+7o=",
        ),
        ("X-HubSpot-Request-Timestamp", "1700000000000"),
    ];
    assert_eq!(
        check(
            &v3,
            "POST",
            None,
            &headers,
            br#"{"example_field":"example_value"}"#,
            1700000000
        ),
        Ok(Some(0))
    );
}

#[test]
fn square_sdk_vectors() {
    let cases = [
        (
            "Ibxx_5AKakO-3qeNVR61Dw",
            "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
            r#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#,
            "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=",
        ),
        (
            "signature-key",
            "https://webhook.site/webhooks",
            r#"{"data":{"type":"webhooks","id":"fake_id"}}"#,
            "W3FlCNk5IA3ZQ2LHTWoajvzfaDu/OwY2tNHIHC3IUOA=",
        ),
        (
            "signature-key",
            "https://webhook.site/webhooks",
            r#"{"data":{"type":"webhooks","id":">id<"}}"#,
            "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U=",
        ),
    ];
    for (key, url, body, sig) in cases {
        let mut s = spec(Scheme::Square);
        s.url = Some(url.into());
        let v = verifier(&s, key);
        assert_eq!(
            check(
                &v,
                "POST",
                None,
                &[("x-square-hmacsha256-signature", sig)],
                body.as_bytes(),
                0
            ),
            Ok(Some(0)),
            "{body}"
        );
    }
}

#[test]
fn recurly_client_vector() {
    let v = verifier(
        &spec(Scheme::Recurly),
        "354fab5bd35f5a0d50845ee7e30165244468b13c2c343f104e4e730a59326d9d",
    );
    let body = r#"{"id":"rjxwmwedwqug","object_type":"account","site_id":"qc326l1hl8k9","event_type":"created","event_time":"2022-09-13T21:18:40Z","account_code":"adfas23zzz14123"}"#;
    let header = "1663103925004,ad24699f3beaa24c9af2cc7ada3ce4c835da0090194241b9d3add83d27f14bc3";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("recurly-signature", header)],
            body.as_bytes(),
            1663103925
        ),
        Ok(Some(0))
    );
}

#[test]
fn twilio_form_and_json_vectors() {
    let mut s = spec(Scheme::Twilio);
    s.url = Some("https://mycompany.com/myapp.php?foo=1&bar=2".into());
    let v = verifier(&s, "12345");
    let form = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")],
            form.as_bytes(),
            0
        ),
        Ok(Some(0))
    );

    let json_url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    s.url = Some(json_url.into());
    let v = verifier(&s, "12345");
    let body = br#"{"property": "value", "boolean": true}"#;
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("X-Twilio-Signature", "a9nBmqA0ju/hNViExpshrM61xv4=")],
            body,
            0
        ),
        Ok(Some(0))
    );
    // The body must hash to bodySHA256: another body with the same URL signature is refused.
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("X-Twilio-Signature", "a9nBmqA0ju/hNViExpshrM61xv4=")],
            br#"{"property": "other"}"#,
            0
        ),
        Err(Rejection::NoMatchingSignature)
    );
}

// ---- computed vectors ----

/// (scheme, secret, headers, body, now)
type Vector = (
    Scheme,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    i64,
);
/// Puts a junk signature next to the good one in a header value.
type Combine = fn(&str, &str) -> String;

#[test]
fn computed_vectors_for_body_signing_schemes() {
    let cases: [Vector; 8] = [
        (
            Scheme::Shopify,
            "hush",
            &[(
                "X-Shopify-Hmac-Sha256",
                "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=",
            )],
            r#"{"id":820982911946154508,"email":"jon@example.com"}"#,
            0,
        ),
        (
            Scheme::Zendesk,
            "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",
            &[
                (
                    "X-Zendesk-Webhook-Signature",
                    "2ITkCp/I0FWDM90MCq7iUnZghjy+f8grJMgyBWWTw4c=",
                ),
                (
                    "X-Zendesk-Webhook-Signature-Timestamp",
                    "2021-07-14T21:55:42Z",
                ),
            ],
            r#"{"type":"zen:event-type:ticket.created","id":"01J0000000000000000000000"}"#,
            1626299742,
        ),
        (
            Scheme::Close,
            "058bfb6a3d8cfdc4da7c3be5901b16ae11da982b46a25fb2cd7016e97a140a1c",
            &[
                (
                    "close-sig-hash",
                    "0769843a3aa62c45a0bb830506f374251e0b07fc55a9cbddf1e0b20d34bcb0b5",
                ),
                ("close-sig-timestamp", "1544271440"),
            ],
            r#"{"event":{"object_type":"lead","action":"created"}}"#,
            1544271440,
        ),
        (
            Scheme::Calendly,
            "calendly-signing-key",
            &[(
                "Calendly-Webhook-Signature",
                "t=1700000000,v1=81a9bfd092b45e5532457d73f595f87d45462d421449a6bae3fa0fa5ec207239",
            )],
            r#"{"event":"invitee.created"}"#,
            1700000000,
        ),
        (
            Scheme::Typeform,
            "typeform-secret",
            &[(
                "Typeform-Signature",
                "sha256=nTd3IdLsUTr4b/SKD0IkIW/ysoAnPCdN/8oORrT/RHQ=",
            )],
            r#"{"event_id":"01HX","event_type":"form_response"}"#,
            0,
        ),
        (
            Scheme::Attio,
            "attio-secret",
            &[(
                "Attio-Signature",
                "43a89a328e741ac5b6332f3ad0f6637bb48ca665e7c492283085ab1234ce1b40",
            )],
            r#"{"webhook_id":"w1","events":[]}"#,
            0,
        ),
        (
            Scheme::Intercom,
            "intercom-secret",
            &[(
                "X-Hub-Signature",
                "sha1=d8921f18e5f9a43dc0a33488540de2de6ae06f87",
            )],
            r#"{"type":"notification_event","topic":"ping"}"#,
            0,
        ),
        (
            Scheme::Lemonsqueezy,
            "lemon-secret",
            &[(
                "X-Signature",
                "ea7b2e8e61b40d4e545a66194a75317232fc04a98c1b2976eb4de40986dbb452",
            )],
            r#"{"meta":{"event_name":"order_created"}}"#,
            0,
        ),
    ];
    for (scheme, secret, headers, body, now) in cases {
        let v = verifier(&spec(scheme), secret);
        assert_eq!(
            check(&v, "POST", None, headers, body.as_bytes(), now),
            Ok(Some(0)),
            "{scheme:?}"
        );
    }
    let v = verifier(&spec(Scheme::Stripe), "whsec_test_secret");
    let body = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
    let header = "t=12345,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("Stripe-Signature", header)],
            body.as_bytes(),
            12345
        ),
        Ok(Some(0))
    );
}

#[test]
fn generic_hmac_reproduces_a_provider_preset() {
    // GitHub described by hand must accept GitHub's own docs vector.
    let mut s = spec(Scheme::Hmac);
    s.header = Some("X-Hub-Signature-256".into());
    s.prefix = Some("sha256=".into());
    s.hmac = Some(HmacOptions {
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: Some("sha256=".into()),
        timestamp_header: None,
        timestamp_format: TimeFormat::Unix,
        message: None,
        secret_encoding: SecretEncoding::Utf8,
    });
    let v = verifier(&s, "It's a Secret to Everybody");
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &[("X-Hub-Signature-256", sig)],
            b"Hello, World!",
            0
        ),
        Ok(Some(0))
    );

    // Slack described by hand, message layout and all.
    let mut s = spec(Scheme::Hmac);
    s.header = Some("X-Slack-Signature".into());
    s.hmac = Some(HmacOptions {
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: Some("v0=".into()),
        timestamp_header: Some("X-Slack-Request-Timestamp".into()),
        timestamp_format: TimeFormat::Unix,
        message: Some(parse_message("v0:{timestamp}:{body}").unwrap()),
        secret_encoding: SecretEncoding::Utf8,
    });
    let v = verifier(&s, "8f742231b10e8888abcd99yyyzzz85a5");
    let headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert_eq!(
        check(
            &v,
            "POST",
            None,
            &headers,
            SLACK_BODY.as_bytes(),
            1531420618
        ),
        Ok(Some(0))
    );
}

// ---- every scheme: the standard mutations ----

const URL: &str = "https://hooks.example.com/webhooks/x";
const NOW: i64 = 1_760_000_000;

/// A spec for `scheme` that needs nothing beyond a secret, and the header holding its signature.
fn case(scheme: Scheme) -> (Spec, &'static str) {
    let mut s = spec(scheme);
    if scheme.needs_url() {
        s.url = Some(URL.into());
    }
    let header = match scheme {
        Scheme::Stripe => "stripe-signature",
        Scheme::StandardWebhooks => "webhook-signature",
        Scheme::Svix => "svix-signature",
        Scheme::Github => "x-hub-signature-256",
        Scheme::Shopify => "x-shopify-hmac-sha256",
        Scheme::Paddle => "paddle-signature",
        Scheme::HubspotV3 => "x-hubspot-signature-v3",
        Scheme::HubspotV2 | Scheme::HubspotV1 => "x-hubspot-signature",
        Scheme::Lemonsqueezy => "x-signature",
        Scheme::Recurly => "recurly-signature",
        Scheme::Slack => "x-slack-signature",
        Scheme::Intercom => "x-hub-signature",
        Scheme::Zendesk => "x-zendesk-webhook-signature",
        Scheme::Square => "x-square-hmacsha256-signature",
        Scheme::Attio => "attio-signature",
        Scheme::Close => "close-sig-hash",
        Scheme::Calendly => "calendly-webhook-signature",
        Scheme::Typeform => "typeform-signature",
        Scheme::Twilio => "x-twilio-signature",
        Scheme::Basic => "authorization",
        Scheme::Token => {
            s.header = Some("X-Webhook-Token".into());
            "x-webhook-token"
        }
        Scheme::Hmac => {
            s.header = Some("X-Signature-512".into());
            s.hmac = Some(HmacOptions {
                algorithm: Algorithm::Sha512,
                encoding: Encoding::Base64,
                prefix: None,
                timestamp_header: Some("X-Timestamp".into()),
                timestamp_format: TimeFormat::UnixMs,
                message: Some(parse_message("{timestamp}:{method}:{body}").unwrap()),
                secret_encoding: SecretEncoding::Utf8,
            });
            "x-signature-512"
        }
        Scheme::None => "",
    };
    (s, header)
}

/// A secret in the form each scheme expects.
fn secret(scheme: Scheme, n: u8) -> String {
    match scheme {
        Scheme::StandardWebhooks | Scheme::Svix => format!(
            "whsec_{}",
            [
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "c2Vjb25kIHNlY3JldCBmb3IgdGVzdHM="
            ][n as usize]
        ),
        Scheme::Close => [
            "058bfb6a3d8cfdc4da7c3be5901b16ae",
            "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        ][n as usize]
            .to_string(),
        Scheme::Basic => format!("user{n}:pass:word{n}"),
        _ => format!("secret-number-{n}"),
    }
}

fn signed(v: &Verifier, body: &[u8], at: i64) -> Vec<(String, String)> {
    let signed = v.sign("POST", URL, body, at);
    assert!(signed.query.is_none(), "form bodies carry no query");
    signed.headers
}

fn run(
    v: &Verifier,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<Option<usize>, Rejection> {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, val)| (k.as_str(), val.as_str()))
        .collect();
    check(v, "POST", Some(URL), &h, body, now)
}

#[test]
fn every_scheme_accepts_its_own_signature_and_refuses_the_usual_attacks() {
    // A form body, so Twilio signs parameters; the others sign it as bytes.
    let body = b"amount=2000&currency=usd&id=evt_1";
    for name in greenflash_bridge::verify::Scheme::NAMES {
        let scheme = Scheme::parse(name).unwrap();
        if scheme == Scheme::None {
            continue;
        }
        let (s, header) = case(scheme);
        let (one, two) = (secret(scheme, 0), secret(scheme, 1));
        let v = verifier(&s, &one);
        let good = signed(&v, body, NOW);
        assert_eq!(run(&v, &good, body, NOW), Ok(Some(0)), "{name}: valid");

        let tampered = b"amount=9000&currency=usd&id=evt_1";
        if !matches!(scheme, Scheme::Basic | Scheme::Token) {
            assert_eq!(
                run(&v, &good, tampered, NOW),
                Err(Rejection::NoMatchingSignature),
                "{name}: tampered"
            );
        }

        let other = verifier(&s, &two);
        assert_eq!(
            run(&v, &signed(&other, body, NOW), body, NOW),
            Err(Rejection::NoMatchingSignature),
            "{name}: wrong secret"
        );

        if let Some(tolerance) = scheme.default_tolerance() {
            let late = tolerance.as_secs() as i64 + 60;
            for at in [NOW - late, NOW + late] {
                assert_eq!(
                    run(&v, &signed(&v, body, at), body, NOW),
                    Err(Rejection::TimestampOutsideTolerance),
                    "{name}: at {at}"
                );
            }
            let inside = tolerance.as_secs() as i64 - 1;
            assert_eq!(
                run(&v, &signed(&v, body, NOW - inside), body, NOW),
                Ok(Some(0)),
                "{name}: inside the window"
            );
        }

        let missing: Vec<(String, String)> = good
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(header))
            .cloned()
            .collect();
        assert_eq!(
            run(&v, &missing, body, NOW),
            Err(Rejection::MissingSignature),
            "{name}: missing"
        );

        if scheme != Scheme::Token {
            let malformed: Vec<(String, String)> = good
                .iter()
                .map(|(k, val)| {
                    if k.eq_ignore_ascii_case(header) {
                        (k.clone(), "%%garbage%%".to_string())
                    } else {
                        (k.clone(), val.clone())
                    }
                })
                .collect();
            assert_eq!(
                run(&v, &malformed, body, NOW),
                Err(Rejection::MalformedSignature),
                "{name}: malformed"
            );
        }

        // Rotation: the new secret first, the old one still accepted and reported as index 1.
        let rotated = verifier(&s, &format!("{two},{one}"));
        assert_eq!(
            run(&rotated, &good, body, NOW),
            Ok(Some(1)),
            "{name}: rotation"
        );
    }
}

#[test]
fn schemes_with_several_signatures_in_one_header_try_each() {
    let body = br#"{"id":"evt_1"}"#;
    let cases: [(Scheme, Combine); 4] = [
        (Scheme::Stripe, |junk, good| format!("{},v1={junk}", good)),
        (Scheme::Paddle, |junk, good| {
            let (ts, h1) = good.split_once(';').unwrap();
            format!("{ts};h1={junk};{h1}")
        }),
        (Scheme::StandardWebhooks, |_, good| {
            format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {good}")
        }),
        (Scheme::Recurly, |junk, good| {
            let (ts, sig) = good.split_once(',').unwrap();
            format!("{ts},{junk},{sig}")
        }),
    ];
    for (scheme, combine) in cases {
        let (s, header) = case(scheme);
        let v = verifier(&s, &secret(scheme, 0));
        let mut headers = signed(&v, body, NOW);
        for (k, val) in headers.iter_mut() {
            if k.eq_ignore_ascii_case(header) {
                *val = combine(&"ab".repeat(32), val);
            }
        }
        assert_eq!(
            run(&v, &headers, body, NOW),
            Ok(Some(0)),
            "{scheme:?}: {headers:?}"
        );
    }
}

#[test]
fn an_unusable_secret_disables_the_source_with_the_variable_named() {
    let s = spec(Scheme::StandardWebhooks);
    let err = Verifier::from_spec(&s, |_| Some("whsec_***not base64***".into())).unwrap_err();
    assert_eq!(err.var, "SECRET");
    let err = Verifier::from_spec(&s, |_| None).unwrap_err();
    assert_eq!(err.to_string(), "environment variable SECRET is not set");
}

#[test]
fn tolerance_is_configurable() {
    let mut s = spec(Scheme::Stripe);
    s.tolerance = Some(Duration::from_secs(10));
    let v = verifier(&s, "whsec_x");
    let body = b"{}";
    assert_eq!(
        run(&v, &signed(&v, body, NOW - 11), body, NOW),
        Err(Rejection::TimestampOutsideTolerance)
    );
    assert_eq!(run(&v, &signed(&v, body, NOW - 9), body, NOW), Ok(Some(0)));
}
