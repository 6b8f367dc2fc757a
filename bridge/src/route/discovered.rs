//! The route Home Assistant discovery stores through: built from
//! `[discovery]`, last in match order, into the `readings` table of its sink.

use std::sync::Arc;

use co2_wire::{Decoder, DeviceId, TopicFilter};

use super::build::invalid;
use super::{Decode, Route};
use crate::config::{ConfigError, Settings, DISCOVERY_ROUTE};
use crate::discovery::Discovery;
use crate::model::{Layout, RouteId};

/// With `[discovery] homeassistant` on, the route discovered sensors are
/// stored through (last: every configured route matches before it, so a
/// state topic a route also matches goes to that route), and the discovery
/// state it reads from.
pub(super) fn route(
    settings: &Settings,
    routes: &mut Vec<Route>,
    default_device: &DeviceId,
    times: &Decoder,
) -> Result<Option<(RouteId, Arc<Discovery>)>, ConfigError> {
    let s = &settings.discovery;
    if !s.homeassistant {
        return Ok(None);
    }
    if routes.iter().any(|r| &*r.name == DISCOVERY_ROUTE) {
        return Err(invalid(
            DISCOVERY_ROUTE,
            "name",
            "is the name of the route of [discovery]; name this route otherwise",
        ));
    }
    let route_filters = routes
        .iter()
        .flat_map(|r| r.filters.iter().cloned())
        .collect();
    let discovery = Arc::new(Discovery::new(s, route_filters));
    let filters = discovery
        .filters()
        .iter()
        .map(|f| {
            TopicFilter::parse(f).map_err(|e| ConfigError::Invalid {
                key: "discovery.prefix".to_owned(),
                message: format!("{f:?}: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layout = Layout::readings();
    routes.push(Route {
        name: Arc::from(DISCOVERY_ROUTE),
        filters,
        default_device: default_device.clone(),
        times: times.clone(),
        zone: None,
        decode: Decode::Discovery(discovery.clone()),
        table: "readings".to_owned(),
        column_names: layout.columns().iter().map(|(c, _)| c.clone()).collect(),
        layout,
        max_payload: s.max_state_bytes.max(s.max_announcement_bytes),
        sink: s.sink.clone(),
        trust_payload_device: false,
        measurement: None,
        tokens_file: None,
        tokens: None,
    });
    Ok(Some((routes.len() - 1, discovery)))
}
