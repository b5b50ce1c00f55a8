//! The storefront: the shop's web page at `/`, plain HTML, CSS and ES modules
//! from `services/gateway/storefront/`, embedded in the binary so that every
//! image of the gateway carries it. The page talks to the shop only through
//! the public REST API, so these routes are not part of the OpenAPI document.
//!
//! Caching: `/` is revalidated on every load (`no-cache` + `ETag`), and names
//! the assets under `/assets/<version>/`, where the version is a hash of all
//! of them; those URLs never change content, so browsers keep them for a year.

use std::sync::LazyLock;

use actix_web::http::header::{self, EntityTag, HeaderValue, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};

use crate::problem::Problem;

/// Allows nothing but the shop itself: no inline script or style, no other
/// origin, no framing. `base-uri`, `form-action` and `frame-ancestors` do not
/// fall back to `default-src`, so they are set too.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Where `index.html` names the versioned asset folder.
const ASSETS_PLACEHOLDER: &str = "%ASSETS%";

/// The page's routes, outside the API (and its document): the page itself and
/// its assets.
pub const PAGE_ROUTE: &str = "/";
pub const ASSET_ROUTE: &str = "/assets/{version}/{name}";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../storefront/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads besides `index.html`.
static ASSETS: &[Asset] = assets![
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "session.js" => JS,
    "cart.js" => JS,
    "catalogue.js" => JS,
    "account.js" => JS,
    "checkout.js" => JS,
    "orders.js" => JS,
    "admin.js" => JS,
];

const INDEX_HTML: &str = include_str!("../../storefront/index.html");

/// FNV-1a: a stable hash (the same in every build and on every replica),
/// enough to tell versions of the assets apart; nothing here is secret.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

struct Built {
    /// Names the assets' folder; changes whenever any asset does.
    version: String,
    index: String,
    index_etag: EntityTag,
    asset_etags: Vec<EntityTag>,
}

static BUILT: LazyLock<Built> = LazyLock::new(|| {
    let version = ASSETS.iter().fold(FNV_OFFSET, |hash, asset| {
        fnv1a(fnv1a(hash, asset.name.as_bytes()), asset.body)
    });
    let version = format!("{version:016x}");
    let index = INDEX_HTML.replace(ASSETS_PLACEHOLDER, &format!("/assets/{version}"));
    let etag = |bytes: &[u8]| EntityTag::new_strong(format!("{:016x}", fnv1a(FNV_OFFSET, bytes)));
    Built {
        index_etag: etag(index.as_bytes()),
        asset_etags: ASSETS.iter().map(|asset| etag(asset.body)).collect(),
        version,
        index,
    }
});

/// The storefront's routes, registered on the app beside the API's.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(PAGE_ROUTE, web::get().to(page))
        .route(ASSET_ROUTE, web::get().to(asset));
}

async fn page(req: HttpRequest) -> HttpResponse {
    let built = &*BUILT;
    respond(
        &req,
        &built.index_etag,
        // Revalidated on every load, so a new release shows at once.
        "no-cache",
        "text/html; charset=utf-8",
        built.index.as_bytes(),
    )
}

async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (version, name) = path.into_inner();
    let built = &*BUILT;
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return Problem::not_found(format!("no storefront asset {name:?}")).error_response();
    };
    // A page of another release (a replica not yet upgraded, a stale tab)
    // still gets a working asset, but one that no cache may keep under a
    // name that promises other content.
    let cache_control = if version == built.version {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let asset = &ASSETS[index];
    respond(
        &req,
        &built.asset_etags[index],
        cache_control,
        asset.content_type,
        asset.body,
    )
}

/// 200 with the body, or 304 when the client's copy is current; both with
/// the headers that keep the page safe.
fn respond(
    req: &HttpRequest,
    etag: &EntityTag,
    cache_control: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> HttpResponse {
    let fresh = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|tag| tag.weak_eq(etag)),
        None => false,
    };
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(header::ETag(etag.clone()))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        return response.finish();
    }
    response.content_type(content_type).body(body)
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{App, test};

    use super::*;

    fn header(response: &HttpResponse, name: header::HeaderName) -> &str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    #[actix_web::test]
    async fn the_page_names_every_asset_under_the_current_version_and_each_is_served() {
        let app = test::init_service(App::new().configure(routes)).await;
        let page =
            test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(!page.contains(ASSETS_PLACEHOLDER), "{page}");
        let prefix = format!("/assets/{}/", BUILT.version);
        for entry in ["style.css", "icon.svg", "app.js"] {
            assert!(
                page.contains(&format!("{prefix}{entry}")),
                "{entry}: {page}"
            );
        }
        // No inline script or style: the policy would block them.
        assert!(
            !page.contains("<style") && !page.contains(" style="),
            "{page}"
        );
        assert!(
            page.matches("<script").count() == page.matches("<script type=\"module\" src=").count(),
            "{page}"
        );
        for asset in ASSETS {
            let request = test::TestRequest::get()
                .uri(&format!("{prefix}{}", asset.name))
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(
                header(response.response(), header::CACHE_CONTROL),
                "public, max-age=31536000, immutable"
            );
            assert_eq!(
                header(response.response(), header::CONTENT_TYPE),
                asset.content_type
            );
        }
    }

    #[actix_web::test]
    async fn a_current_copy_is_not_sent_again_and_headers_keep_the_page_safe() {
        let app = test::init_service(App::new().configure(routes)).await;
        let first = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let first = first.response();
        assert_eq!(header(first, header::CACHE_CONTROL), "no-cache");
        assert_eq!(
            header(first, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(header(first, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        let etag = header(first, header::ETAG).to_owned();

        let again = test::TestRequest::get()
            .uri("/")
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
            .to_request();
        let again = test::call_service(&app, again).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(again.response(), header::ETAG), etag);

        let other = test::TestRequest::get()
            .uri("/")
            .insert_header((header::IF_NONE_MATCH, "\"something-else\""))
            .to_request();
        assert_eq!(
            test::call_service(&app, other).await.status(),
            StatusCode::OK
        );
    }

    #[actix_web::test]
    async fn another_release_gets_an_uncached_asset_and_unknown_names_are_404() {
        let app = test::init_service(App::new().configure(routes)).await;
        let stale = test::TestRequest::get()
            .uri("/assets/0000000000000000/app.js")
            .to_request();
        let stale = test::call_service(&app, stale).await;
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(header(stale.response(), header::CACHE_CONTROL), "no-cache");

        for uri in [
            format!("/assets/{}/secret.txt", BUILT.version),
            format!("/assets/{}/..%2FCargo.toml", BUILT.version),
        ] {
            let response =
                test::call_service(&app, test::TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }
}
