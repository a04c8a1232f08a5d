package config

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// EnvPrefix starts every environment variable of serve's settings: the
// flag's name in capitals, '_' for '-' (SWITCHBOARD_GRPC_ADDR).
const EnvPrefix = "SWITCHBOARD_"

// EnvConfig names the configuration file when --config is not given.
const EnvConfig = EnvPrefix + "CONFIG"

// EnvName is the environment variable of flag: SWITCHBOARD_GRPC_ADDR for
// grpc-addr.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// mapping is one setting of the file: its place (section.field) and its
// flag.
type mapping struct {
	Field string
	Flag  string
}

// mappings are every setting of the file, in the order of serve's help.
// TestEveryFieldIsMapped checks that no field of the schema's sections is
// left out.
var mappings = []mapping{
	{"server.grpc_addr", "grpc-addr"},
	{"server.admin_addr", "admin-addr"},
	{"server.admin_pprof", "admin-pprof"},
	{"server.drain_timeout", "drain-timeout"},
	{"server.shutdown_timeout", "shutdown-timeout"},
	{"storage.data_dir", "data-dir"},
	{"storage.no_fsync", "no-fsync"},
	{"storage.retain_age", "retain-age"},
	{"storage.retain_bytes", "retain-bytes"},
	{"limits.max_buffered_bytes", "max-buffered-bytes"},
	{"limits.memory_limit", "memory-limit"},
	{"limits.max_connections", "max-connections"},
	{"logging.level", "log-level"},
	{"logging.format", "log-format"},
	{"security.grpc_tls_cert", "grpc-tls-cert"},
	{"security.grpc_tls_key", "grpc-tls-key"},
	{"security.grpc_client_ca", "grpc-client-ca"},
	{"security.grpc_require_client_cert", "grpc-require-client-cert"},
	{"security.access_file", "access-file"},
	{"security.tls_profiles", "tls-profiles"},
	{"security.insecure_control_plane", "insecure-control-plane"},
	{"security.insecure_admin", "insecure-admin"},
	{"security.allow_listen", "allow-listen"},
	{"security.allow_dial", "allow-dial"},
	{"security.deny_dial", "deny-dial"},
	{"security.rate_limit", "rate-limit"},
	{"security.rate_burst", "rate-burst"},
	{"security.max_streams_per_identity", "max-streams-per-identity"},
	{"security.audit_syslog", "audit-syslog"},
	{"security.audit_syslog_profile", "audit-syslog-profile"},
	{"security.audit_data_calls", "audit-data-calls"},
	{"cluster.urls", "cluster"},
	{"cluster.name", "cluster-name"},
	{"cluster.instance", "instance"},
	{"cluster.replicas", "cluster-replicas"},
	{"cluster.lease_ttl", "cluster-lease-ttl"},
	{"cluster.nats_creds", "nats-creds"},
	{"cluster.nats_tls_ca", "nats-tls-ca"},
	{"cluster.nats_tls_cert", "nats-tls-cert"},
	{"cluster.nats_tls_key", "nats-tls-key"},
}

// Flags are the names of the serve flags the file and the environment can
// set, every one of serve's flags but --config itself.
func Flags() []string {
	names := make([]string, len(mappings))
	for i, m := range mappings {
		names[i] = m.Flag
	}
	return names
}

// Setting is one value the file gives a flag.
type Setting struct {
	// Flag is the flag's name, without dashes: "grpc-addr".
	Flag string
	// Value is the flag's value in the flag's own syntax: a duration as
	// "1m30s", a list as "a,b".
	Value string
	// Field is where the file gives it: "server.grpc_addr".
	Field string
	// Path and Line are the file and the line of the field's key.
	Path string
	Line int
}

// Origin names where s comes from, for messages: "switchboard.yaml:3
// (server.grpc_addr)".
func (s Setting) Origin() string {
	return fmt.Sprintf("%s:%d (%s)", s.Path, s.Line, s.Field)
}

// Settings are the flag values f sets, in the order of Flags. A setting
// absent from the file is not there (its flag keeps its default); an empty
// list is absent too (write ["none"] for no rules).
func Settings(f *File) []Setting {
	var out []Setting
	root := f.Config.ProtoReflect()
	for _, m := range mappings {
		v, ok := fieldValue(root, m.Field)
		if !ok {
			continue
		}
		out = append(out, Setting{Flag: m.Flag, Value: v, Field: m.Field, Path: f.Path, Line: f.lines[m.Field]})
	}
	return out
}

// fieldValue formats the field at path ("section.field") of root as its
// flag would take it; false when the file does not set it.
func fieldValue(root protoreflect.Message, path string) (string, bool) {
	secName, fieldName, _ := strings.Cut(path, ".")
	secFD := root.Descriptor().Fields().ByName(protoreflect.Name(secName))
	if secFD == nil || !root.Has(secFD) {
		return "", false
	}
	sec := root.Get(secFD).Message()
	fd := sec.Descriptor().Fields().ByName(protoreflect.Name(fieldName))
	if fd == nil || !sec.Has(fd) {
		return "", false
	}
	v := sec.Get(fd)
	if fd.IsList() {
		l := v.List()
		items := make([]string, l.Len())
		for i := range l.Len() {
			items[i] = l.Get(i).String()
		}
		return strings.Join(items, ","), true
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool()), true
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		return strconv.FormatInt(v.Int(), 10), true
	case protoreflect.DoubleKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), true
	case protoreflect.StringKind:
		return v.String(), true
	case protoreflect.MessageKind:
		if d, ok := v.Message().Interface().(*durationpb.Duration); ok {
			return d.AsDuration().String(), true
		}
	}
	panic(fmt.Sprintf("config: field %s has a kind Settings cannot format (%s)", path, fd.Kind()))
}

// Apply gives each flag of Flags its value by precedence: a flag given on
// the command line (isSet) keeps its value; otherwise its environment
// variable (EnvName), when lookupEnv finds it, even empty; otherwise the
// file's setting; otherwise the flag keeps its default. set is the flag
// set's Set (pflag's FlagSet.Set, flag.FlagSet.Set); its errors come back
// naming the variable or the file, line and field. lookupEnv is
// os.LookupEnv, or a map's lookup in tests.
func Apply(settings []Setting, isSet func(flag string) bool, set func(flag, value string) error, lookupEnv func(key string) (string, bool)) error {
	fromFile := make(map[string]Setting, len(settings))
	for _, s := range settings {
		fromFile[s.Flag] = s
	}
	for _, m := range mappings {
		if isSet(m.Flag) {
			continue
		}
		if v, ok := lookupEnv(EnvName(m.Flag)); ok {
			if err := set(m.Flag, v); err != nil {
				return fmt.Errorf("environment %s=%q (--%s): %w", EnvName(m.Flag), v, m.Flag, err)
			}
			continue
		}
		if s, ok := fromFile[m.Flag]; ok {
			if err := set(m.Flag, s.Value); err != nil {
				return fmt.Errorf("%s: --%s %q: %w", s.Origin(), m.Flag, s.Value, err)
			}
		}
	}
	return nil
}

// Resolve is the whole of serve's start-up with a flag set: the file is
// configPath (the --config flag), or SWITCHBOARD_CONFIG when that is
// empty, or none; it is loaded and checked, then Apply gives every flag
// the command line did not set its environment variable's value or the
// file's. The environment applies with no file too. The File is nil
// without one; its Config holds the declared resources for Reconcile.
func Resolve(configPath string, isSet func(flag string) bool, set func(flag, value string) error, lookupEnv func(key string) (string, bool)) (*File, error) {
	if configPath == "" {
		configPath, _ = lookupEnv(EnvConfig)
	}
	var f *File
	var settings []Setting
	if configPath != "" {
		var err error
		if f, err = Load(configPath); err != nil {
			return nil, err
		}
		settings = Settings(f)
	}
	if err := Apply(settings, isSet, set, lookupEnv); err != nil {
		return nil, err
	}
	return f, nil
}
