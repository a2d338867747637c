//! The AWS emulator as the stack starts it (`scripts/moto_server.py`): a canceled
//! `TransactWriteItems` undoes exactly its own writes, as DynamoDB does. The script rolls back
//! the items a transaction touched instead of a copy of the whole table, so this is what guards
//! that rollback.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TransactWriteItem, Update,
};

use crate::common::TestEnv;

fn key(pk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [("pk".to_owned(), AttributeValue::S(pk.into()))].into()
}

#[tokio::test]
async fn a_canceled_transaction_undoes_its_own_writes_and_keeps_everyone_elses() {
    let env = TestEnv::new().await;
    let db = env.dynamodb();
    let table = format!("emulator-{}", env.suffix);
    db.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let put = |pk: &str, n: &str| {
        db.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(pk.into()))
            .item("n", AttributeValue::N(n.into()))
    };
    put("counter", "1").send().await.unwrap();
    put("taken", "7").send().await.unwrap();
    let increment = TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(&table)
                .set_key(Some(key("counter")))
                .update_expression("SET n = n + :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .build()
                .unwrap(),
        )
        .build();
    put("bystander", "3").send().await.unwrap();

    // An update and a new item are written before the third item's condition fails.
    let canceled = db
        .transact_write_items()
        .transact_items(increment.clone())
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&table)
                        .item("pk", AttributeValue::S("fresh".into()))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&table)
                        .item("pk", AttributeValue::S("taken".into()))
                        .item("n", AttributeValue::N("0".into()))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    let error = canceled.expect_err("the condition on `taken` fails");
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_transaction_canceled_exception()),
        "{error:?}"
    );

    let n = |pk: &'static str| {
        let db = db.clone();
        let table = table.clone();
        async move {
            db.get_item()
                .table_name(&table)
                .set_key(Some(key(pk)))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .map(|item| item["n"].as_n().unwrap().clone())
        }
    };
    assert_eq!(
        n("counter").await.as_deref(),
        Some("1"),
        "the update is undone"
    );
    assert_eq!(
        n("taken").await.as_deref(),
        Some("7"),
        "the failed put wrote nothing"
    );
    assert_eq!(n("bystander").await.as_deref(), Some("3"));
    let fresh = db
        .get_item()
        .table_name(&table)
        .set_key(Some(key("fresh")))
        .send()
        .await
        .unwrap();
    assert!(fresh.item.is_none(), "the new item is undone: {fresh:?}");

    // And a transaction that succeeds writes all of its items.
    put("counter", "1").send().await.unwrap();
    db.transact_write_items()
        .transact_items(increment.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(n("counter").await.as_deref(), Some("2"));
}
