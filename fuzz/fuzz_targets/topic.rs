//! Topic filters with named levels, and topics matched against them: any
//! filter text, any topic. A match must report exactly the topic's levels
//! at the captured positions.
#![no_main]

use co2_fuzz::split_delivery;
use co2_wire::TopicFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (filter, topic) = split_delivery(data);
    let (Ok(filter), Ok(topic)) = (std::str::from_utf8(filter), std::str::from_utf8(topic)) else {
        return;
    };
    let Ok(f) = TopicFilter::parse(filter) else {
        return;
    };
    let names: Vec<&str> = f.names().collect();
    assert!(names.iter().all(|n| *n != "device" && !n.is_empty() && n.len() <= 64));
    let Some(m) = f.matches(topic) else {
        return;
    };
    let levels: Vec<&str> = topic.split('/').collect();
    assert!(m.device().is_none_or(|d| levels.contains(&d)));
    assert_eq!(m.named().len(), names.len(), "a match reports every named level");
    for ((name, text), want) in m.named().iter().zip(&names) {
        assert_eq!(name, want);
        assert!(levels.contains(text), "{text:?} is not a level of {topic:?}");
    }
});
