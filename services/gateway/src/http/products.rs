//! `/products`: anyone reads; admins write.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use proto::inventory::v1 as pb;
use uuid::Uuid;

use super::dto::{CreateProduct, Product, ProductPage, ProductQuery, UpdateProduct};
use super::{AppState, Created, Json};
use crate::auth::Caller;
use crate::problem::Problem;

#[utoipa::path(
    tag = "products",
    request_body = CreateProduct,
    security(("bearer" = [])),
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Created", body = Product),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/products")]
pub async fn create_product(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateProduct>,
) -> Result<Created<Product>, Problem> {
    caller.require_admin()?;
    let body = body.into_inner();
    body.validate()?;
    let request = pb::CreateProductRequest {
        name: body.name.trim().to_owned(),
        category: body.category.trim().to_owned(),
        stock: body.stock,
        price: body.price.to_wire(),
    };
    let response = state
        .clients
        .inventory
        .call(|mut c| async move { c.create_product(request).await })
        .await?;
    let product = Product::from_proto(response.product.ok_or_else(missing_product)?)?;
    Ok(Created::at(format!("/products/{}", product.id), product))
}

#[utoipa::path(
    tag = "products",
    params(ProductQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/products")]
pub async fn list_products(
    state: web::Data<AppState>,
    query: web::Query<ProductQuery>,
) -> Result<web::Json<ProductPage>, Problem> {
    let query = query.into_inner();
    query.validate()?;
    let request = pb::ListProductsRequest {
        page: query.page.unwrap_or(1),
        page_size: query
            .page_size
            .unwrap_or(platform::limits::DEFAULT_PAGE_SIZE),
        category: query.category.map(|c| c.trim().to_owned()),
    };
    let response = state
        .clients
        .inventory
        .call(|mut c| async move { c.list_products(request).await })
        .await?;
    Ok(web::Json(ProductPage {
        products: response
            .products
            .into_iter()
            .map(Product::from_proto)
            .collect::<Result<_, _>>()?,
        page: response.page,
        page_size: response.page_size,
        total: response.total,
    }))
}

#[utoipa::path(
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/products/{id}")]
pub async fn get_product(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    if let Some(json) = state.shared.products.get(&id) {
        return Ok(json_response(json));
    }
    let read_at = std::time::Instant::now();
    let request = pb::GetProductRequest { id: id.to_string() };
    let response = state
        .clients
        .inventory
        .call(|mut c| async move { c.get_product(request).await })
        .await?;
    let product = Product::from_proto(response.product.ok_or_else(missing_product)?)?;
    let json = web::Bytes::from(
        serde_json::to_vec(&product)
            .map_err(|e| Problem::internal(format!("product {id} does not serialize: {e}")))?,
    );
    state.shared.products.put(id, json.clone(), read_at);
    Ok(json_response(json))
}

fn json_response(json: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(json)
}

#[utoipa::path(
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = UpdateProduct,
    security(("bearer" = [])),
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The updated product", body = Product),
        (status = 400, description = "Invalid body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/products/{id}")]
pub async fn update_product(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: Json<UpdateProduct>,
) -> Result<web::Json<Product>, Problem> {
    caller.require_admin()?;
    let body = body.into_inner();
    body.validate()?;
    let id = id.into_inner();
    let request = pb::UpdateProductRequest {
        id: id.to_string(),
        name: body.name.map(|n| n.trim().to_owned()),
        category: body.category.map(|c| c.trim().to_owned()),
        stock: body.stock,
        price: body.price.map(|p| p.to_wire()),
    };
    let response = state
        .clients
        .inventory
        .call(|mut c| async move { c.update_product(request).await })
        .await?;
    // This replica reads its own write at once; the others hear Inventory.
    state.shared.products.changed(&[id]);
    Ok(web::Json(Product::from_proto(
        response.product.ok_or_else(missing_product)?,
    )?))
}

#[utoipa::path(
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/products/{id}")]
pub async fn delete_product(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    caller.require_admin()?;
    let id = id.into_inner();
    let request = pb::DeleteProductRequest { id: id.to_string() };
    state
        .clients
        .inventory
        .call(|mut c| async move { c.delete_product(request).await })
        .await?;
    state.shared.products.changed(&[id]);
    Ok(HttpResponse::NoContent().finish())
}

fn missing_product() -> Problem {
    Problem::internal("the inventory service answered without a product")
}
