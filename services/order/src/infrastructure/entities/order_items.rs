use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "order_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: Uuid,
    /// Position of the line in the request, so it reads back in that order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub line_no: i16,
    pub product_id: Uuid,
    pub quantity: i32,
    #[sea_orm(column_type = "Decimal(Some((12, 2)))")]
    pub unit_price: Decimal,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
