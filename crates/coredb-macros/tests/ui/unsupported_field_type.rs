pub struct Money {
    pub cents: i64,
}

#[coredb::model(table = "wallets", mixin = UuidMixin)]
pub struct Wallet {
    pub balance: Money,
}

fn main() {}
