package service

// MaxTextBytes is what the API's strings taken from message bytes are cut
// to, for the external tests' model of them.
const MaxTextBytes = maxTextBytes
