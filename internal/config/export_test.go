package config

import "time"

// SetRetryDelay makes RetryPending retry every d (tests cannot wait 1 s
// doubling).
func SetRetryDelay(r *Report, d time.Duration) { r.retryDelay, r.maxRetryDelay = d, d }
