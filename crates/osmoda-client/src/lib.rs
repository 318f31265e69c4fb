//! HTTP/1.1 + JSON client for osModa daemons over Unix sockets, and the durable event Reporter.
