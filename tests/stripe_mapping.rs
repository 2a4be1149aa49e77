//! Every row of the Stripe table in the README, through the shipped mappings/stripe.toml.

mod support;

use greenflash_bridge::inbound::Headers;
use greenflash_bridge::mapping::{Options, ProviderEvent, Status, load_dir};
use serde_json::{Value, json};
use support::{PRODUCT_ID, fixture, repo_path};

fn map(doc: &Value) -> ProviderEvent {
    let loaded = load_dir(&repo_path("mappings")).expect("shipped mappings are valid");
    let stripe = loaded.catalog.get("stripe").expect("stripe source");
    let options = Options {
        default_product_id: Some(PRODUCT_ID),
        explain: false,
    };
    let mut events = stripe
        .apply(doc, &Headers::new(), &options)
        .expect("identifiable");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn load(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("stripe/{name}"))).unwrap()
}

/// (eventType, influence, value, valueType) of each emitted event.
fn summary(event: &ProviderEvent) -> Vec<(String, String, String, String)> {
    assert!(event.failures.is_empty(), "{:?}", event.failures);
    event
        .emitted
        .iter()
        .map(|e| {
            let j = serde_json::to_value(&e.event).unwrap();
            let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
            (s("eventType"), s("influence"), s("value"), s("valueType"))
        })
        .collect()
}

fn row(
    event_type: &str,
    influence: &str,
    value: &str,
    value_type: &str,
) -> Vec<(String, String, String, String)> {
    vec![(
        event_type.into(),
        influence.into(),
        value.into(),
        value_type.into(),
    )]
}

#[test]
fn invoice_paid_with_an_amount_is_a_positive_currency_event() {
    assert_eq!(
        summary(&map(&load("invoice.paid.json"))),
        row("invoice_paid", "positive", "20.00", "currency")
    );
}

#[test]
fn zero_decimal_and_three_decimal_currencies_use_their_iso_exponent() {
    let jpy = map(&load("invoice.paid_jpy.json"));
    assert_eq!(
        summary(&jpy),
        row("invoice_paid", "positive", "3000", "currency")
    );
    let kwd = map(&load("invoice.paid_kwd.json"));
    assert_eq!(
        summary(&kwd),
        row("invoice_paid", "positive", "6.000", "currency")
    );
    let props = |e: &ProviderEvent| e.emitted[0].event.properties.clone().unwrap();
    assert_eq!(props(&jpy)["currency"], "JPY");
    assert_eq!(props(&kwd)["currency"], "KWD");
}

#[test]
fn an_invoice_paid_for_nothing_is_ignored() {
    let mut doc = load("invoice.paid.json");
    doc["data"]["object"]["amount_paid"] = json!(0);
    let event = map(&doc);
    assert_eq!(event.status(), Status::Ignored);
    assert!(event.emitted.is_empty());
}

#[test]
fn a_failed_payment_is_negative_for_the_amount_due() {
    assert_eq!(
        summary(&map(&load("invoice.payment_failed.json"))),
        row("payment_failed", "negative", "50.00", "currency")
    );
}

#[test]
fn a_new_subscription_starts_a_trial_or_a_subscription_by_status() {
    let active = load("customer.subscription.created.json");
    assert_eq!(
        summary(&map(&active)),
        row("subscription_started", "positive", "20.00", "currency")
    );
    let mut trialing = active.clone();
    trialing["data"]["object"]["status"] = json!("trialing");
    assert_eq!(
        summary(&map(&trialing)),
        row("trial_started", "positive", "20.00", "currency")
    );
}

#[test]
fn a_higher_recurring_amount_is_an_upgrade_and_a_lower_one_a_downgrade() {
    let upgrade = load("customer.subscription.updated.json");
    assert_eq!(
        summary(&map(&upgrade)),
        row("upgrade_purchased", "positive", "50.00", "currency")
    );

    let mut downgrade = upgrade.clone();
    let new_item = downgrade["data"]["previous_attributes"]["items"]["data"][0].clone();
    let old_item = downgrade["data"]["object"]["items"]["data"][0].clone();
    downgrade["data"]["object"]["items"]["data"][0] = new_item;
    downgrade["data"]["previous_attributes"]["items"]["data"][0] = old_item;
    assert_eq!(
        summary(&map(&downgrade)),
        row("subscription_downgraded", "negative", "20.00", "currency")
    );
}

#[test]
fn quantity_counts_in_the_recurring_amount() {
    let mut doc = load("customer.subscription.created.json");
    doc["data"]["object"]["items"]["data"][0]["quantity"] = json!(3);
    assert_eq!(
        summary(&map(&doc)),
        row("subscription_started", "positive", "60.00", "currency")
    );
}

#[test]
fn turning_on_cancel_at_period_end_is_a_cancellation_request() {
    let mut doc = load("customer.subscription.updated.json");
    doc["data"]["object"]["cancel_at_period_end"] = json!(true);
    doc["data"]["previous_attributes"] = json!({"cancel_at_period_end": false});
    assert_eq!(
        summary(&map(&doc)),
        row("cancellation_requested", "negative", "50.00", "currency")
    );
}

#[test]
fn an_update_that_changes_neither_price_nor_cancellation_is_ignored() {
    let mut doc = load("customer.subscription.updated.json");
    doc["data"]["previous_attributes"] = json!({"metadata": {}});
    assert_eq!(map(&doc).status(), Status::Ignored);
}

#[test]
fn a_deleted_subscription_is_a_cancellation() {
    assert_eq!(
        summary(&map(&load("customer.subscription.deleted.json"))),
        row("subscription_cancelled", "negative", "50.00", "currency")
    );
}

#[test]
fn checkout_completion_and_refunds_carry_their_amounts() {
    assert_eq!(
        summary(&map(&load("checkout.session.completed.json"))),
        row("checkout_completed", "positive", "20.00", "currency")
    );
    assert_eq!(
        summary(&map(&load("charge.refunded.json"))),
        row("refund_issued", "negative", "15.00", "currency")
    );
}

#[test]
fn a_new_customer_is_a_signup_worth_one() {
    let event = map(&load("customer.created.json"));
    assert_eq!(
        summary(&event),
        row("signup_completed", "positive", "1", "numeric")
    );
    assert_eq!(
        event.emitted[0].event.external_user_id.as_deref(),
        Some("usr_01JNP4W7G9QK3T8ZV2R6M5XHCD")
    );
}

#[test]
fn other_stripe_events_are_ignored() {
    assert_eq!(
        map(&load("payment_intent.succeeded.json")).status(),
        Status::Ignored
    );
}

#[test]
fn the_user_is_the_apps_own_id_before_the_stripe_customer() {
    let with_metadata = map(&load("checkout.session.completed_with_metadata.json"));
    let e = &with_metadata.emitted[0].event;
    assert_eq!(
        e.external_user_id.as_deref(),
        Some("usr_01JNP4W7G9QK3T8ZV2R6M5XHCD")
    );
    assert_eq!(
        e.external_conversation_id.as_deref(),
        Some("conv_7b1e2f94c3a84d0f9e61a2d5")
    );

    let mut anonymous = load("invoice.payment_failed.json");
    anonymous["data"]["object"]["parent"] = Value::Null;
    let e = &map(&anonymous).emitted[0].event;
    assert_eq!(
        e.external_user_id.as_deref(),
        Some("cus_ndRjYl1gwA00Qz"),
        "falls back to the customer"
    );
}

#[test]
fn insert_ids_are_stable_and_contain_the_stripe_event_id() {
    let doc = load("invoice.paid.json");
    let a = map(&doc).emitted[0].event.insert_id.clone().unwrap();
    let b = map(&doc).emitted[0].event.insert_id.clone().unwrap();
    assert_eq!(a, b);
    assert!(a.contains("evt_1T8yCILr4TnX2bKwbilvUUvw"), "{a}");
    let at = map(&doc).emitted[0].event.event_at.clone().unwrap();
    assert_eq!(
        at, "2026-03-09T16:11:11Z",
        "event time is Stripe's `created`, not receipt time"
    );
}
