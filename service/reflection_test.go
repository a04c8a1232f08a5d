package service_test

import (
	"strings"
	"testing"

	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// reflectedFiles asks a real server, through the reflection v1 API as
// grpcurl does, for the file defining symbol and everything it imports.
func reflectedFiles(t *testing.T, s *server, symbol string) *descriptorpb.FileDescriptorSet {
	t.Helper()
	stream, err := reflectionv1.NewServerReflectionClient(s.cc).ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	defer func() { _ = stream.CloseSend() }()
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol},
	}); err != nil {
		t.Fatalf("send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		t.Fatalf("reflection error for %s: %v %s", symbol, e.GetErrorCode(), e.GetErrorMessage())
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatalf("unmarshal file descriptor: %v", err)
		}
		set.File = append(set.File, fd)
	}
	return set
}

// TestReflectionServesComments: `grpcurl describe` shows the proto's
// comments, so every RPC of the API must arrive documented.
func TestReflectionServesComments(t *testing.T) {
	s := startServer(t, t.TempDir())
	set := reflectedFiles(t, s, "switchboard.v1.SwitchboardService")
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("the reflected files do not resolve (an import missing?): %v", err)
	}
	d, err := files.FindDescriptorByName("switchboard.v1.SwitchboardService")
	if err != nil {
		t.Fatal(err)
	}
	svc := d.(protoreflect.ServiceDescriptor)
	comment := func(d protoreflect.Descriptor) string {
		return d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments
	}
	const known = "SwitchboardService lets any gRPC client talk raw TCP to legacy systems"
	if got := comment(svc); !strings.Contains(got, known) {
		t.Fatalf("service comment = %q, want it to contain %q", got, known)
	}
	methods := svc.Methods()
	if methods.Len() < 20 {
		t.Fatalf("%d methods, want the whole API", methods.Len())
	}
	for i := range methods.Len() {
		m := methods.Get(i)
		if strings.TrimSpace(comment(m)) == "" {
			t.Errorf("rpc %s arrives without its comment", m.Name())
		}
	}
	send, err := files.FindDescriptorByName("switchboard.v1.SendRequest.connection_id")
	if err != nil {
		t.Fatal(err)
	}
	if got := comment(send); !strings.Contains(got, "The connection to write on.") {
		t.Errorf("SendRequest.connection_id comment = %q", got)
	}
}

// TestReflectionOtherServices: health and reflection itself, which are not
// in the documented set, still resolve, and the v1alpha API answers too.
func TestReflectionOtherServices(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, symbol := range []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		set := reflectedFiles(t, s, symbol)
		if len(set.GetFile()) == 0 {
			t.Errorf("%s: no files", symbol)
		}
	}

	stream, err := reflectionv1alpha.NewServerReflectionClient(s.cc).ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stream.CloseSend() }()
	if err := stream.Send(&reflectionv1alpha.ServerReflectionRequest{
		MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	for _, want := range []string{"switchboard.v1.SwitchboardService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("v1alpha ListServices = %v, want %s", names, want)
		}
	}
}
