#[coredb::model(table = "products", mixin = UuidMixin)]
pub struct Product {
    #[column(length = 10)]
    pub stock: i32,
}

fn main() {}
