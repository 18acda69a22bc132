// core.db's MyModel has no key of its own; a model needs one.
#[coredb::model(table = "my_table", mixin = TimestampMixin)]
pub struct MyModel {
    pub name: String,
}

fn main() {}
