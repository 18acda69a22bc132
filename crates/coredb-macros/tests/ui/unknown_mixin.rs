// core.db's spelling, UUIDTimestampMixin, is close to a known mixin.
#[coredb::model(table = "users", mixin = UUIDTimestampMixin)]
pub struct User {
    pub name: String,
}

#[coredb::model(table = "items", mixin = SoftDeleteMixin)]
pub struct Item {
    pub name: String,
}

fn main() {}
