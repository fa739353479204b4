//! API Gateway's route selection.

use super::route_score;

#[test]
fn routes_match_like_api_gateway() {
    assert_eq!(
        route_score("/v2/models/{model}/infer", "/v2/models/m/infer"),
        Some((0, 1))
    );
    assert_eq!(
        route_score("/v2/models/{model}/infer", "/v2/models/m/infer/x"),
        None
    );
    assert_eq!(
        route_score("/v2/models/{model}/infer", "/v2/models//infer"),
        None
    );
    assert_eq!(route_score("/v2/{proxy+}", "/v2/models/m"), Some((1, 0)));
    assert_eq!(route_score("/v2/{proxy+}", "/v2"), None);
    assert_eq!(route_score("/v2", "/v2"), Some((0, 0)));
    assert_eq!(route_score("/ping", "/pong"), None);
}
