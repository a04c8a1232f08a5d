package service

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// registerReflection registers server reflection, v1 and v1alpha (older
// grpcurl and other clients ask for that), answering from the API's
// descriptors with their comments, so `grpcurl describe` documents the API.
// Files not in that set (health, reflection itself) come from the
// compiled-in registry.
func registerReflection(s *grpc.Server) error {
	files, err := documentedFiles()
	if err != nil {
		return err
	}
	opts := reflection.ServerOptions{
		Services:           s,
		DescriptorResolver: documentedResolver{files},
		ExtensionResolver:  protoregistry.GlobalTypes,
	}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return nil
}

// documentedFiles parses the embedded descriptor set once; it never
// changes after.
var documentedFiles = sync.OnceValues(func() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(switchboardv1.SourceDescriptors, &set); err != nil {
		return nil, fmt.Errorf("reflection: parse the API's descriptor set: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("reflection: build the API's descriptors: %w", err)
	}
	return files, nil
})

// documentedResolver looks in the documented files first, then in the
// compiled-in registry.
type documentedResolver struct{ files *protoregistry.Files }

func (r documentedResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	fd, err := r.files.FindFileByPath(path)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalFiles.FindFileByPath(path)
	}
	return fd, err
}

func (r documentedResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	d, err := r.files.FindDescriptorByName(name)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalFiles.FindDescriptorByName(name)
	}
	return d, err
}
