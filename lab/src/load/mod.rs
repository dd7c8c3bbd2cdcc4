//! The load driver: virtual users that exercise the lab through its balancer.
//! (Being written; see issue 6.)
