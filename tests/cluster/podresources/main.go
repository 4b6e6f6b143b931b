// Command podresources-server serves the kubelet's pod-resources API on a unix socket with
// the kubelet's own code: k8s.io/kubernetes/pkg/kubelet/server.ListenAndServePodResources,
// the function the kubelet calls for /var/lib/kubelet/pod-resources/kubelet.sock, with its
// v1 and v1alpha1 servers, gRPC rate limiter and protobuf types. Only what the kubelet's
// device, CPU and memory managers would know comes from a JSON file instead:
//
//	podresources-server SOCKET PODS.json
//
// PODS.json is a list of pods: {"namespace", "name", "uid", "containers": [{"name",
// "devices": {"nvidia.com/gpu": ["GPU-..."]}, "numa": 0, "cpus": [2, 3],
// "memory_bytes": 1073741824}]}. The Capstan e2e suite points the agent's pod-resources
// client at it: the real server and wire format, without a container runtime (the test
// cluster's nodes are kwok's, which run no kubelet).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/kubelet/apis/podresources"
	"k8s.io/kubernetes/pkg/kubelet/server"
	api "k8s.io/kubelet/pkg/apis/podresources/v1"
)

type container struct {
	Name        string              `json:"name"`
	Devices     map[string][]string `json:"devices"`
	NUMA        int64               `json:"numa"`
	CPUs        []int64             `json:"cpus"`
	MemoryBytes uint64              `json:"memory_bytes"`
}

type pod struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	UID        string      `json:"uid"`
	Containers []container `json:"containers"`
}

// node answers for the kubelet's pod, device, CPU, memory and DRA managers from the file.
type node struct {
	pods []pod
	objs []*v1.Pod
}

func (n *node) find(podUID, name string) *container {
	for i := range n.pods {
		if n.pods[i].UID != podUID {
			continue
		}
		for j := range n.pods[i].Containers {
			if n.pods[i].Containers[j].Name == name {
				return &n.pods[i].Containers[j]
			}
		}
	}
	return nil
}

func (n *node) GetActivePods() []*v1.Pod { return n.objs }
func (n *node) GetPods() []*v1.Pod       { return n.objs }
func (n *node) GetPodByName(namespace, name string) (*v1.Pod, bool) {
	for _, p := range n.objs {
		if p.Namespace == namespace && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func (n *node) UpdateAllocatedDevices() {}
func (n *node) GetDevices(podUID, name string) []*api.ContainerDevices {
	c := n.find(podUID, name)
	if c == nil {
		return nil
	}
	var out []*api.ContainerDevices
	for resource, ids := range c.Devices {
		out = append(out, &api.ContainerDevices{
			ResourceName: resource,
			DeviceIds:    ids,
			Topology:     &api.TopologyInfo{Nodes: []*api.NUMANode{{ID: c.NUMA}}},
		})
	}
	return out
}
func (n *node) GetAllocatableDevices() []*api.ContainerDevices { return nil }
func (n *node) GetCPUs(podUID, name string) []int64 {
	if c := n.find(podUID, name); c != nil {
		return c.CPUs
	}
	return nil
}
func (n *node) GetAllocatableCPUs() []int64 { return nil }
func (n *node) GetMemory(podUID, name string) []*api.ContainerMemory {
	if c := n.find(podUID, name); c != nil && c.MemoryBytes > 0 {
		return []*api.ContainerMemory{{MemoryType: "memory", Size: c.MemoryBytes,
			Topology: &api.TopologyInfo{Nodes: []*api.NUMANode{{ID: c.NUMA}}}}}
	}
	return nil
}
func (n *node) GetAllocatableMemory() []*api.ContainerMemory { return nil }
func (n *node) GetDynamicResources(*v1.Pod, *v1.Container) []*api.DynamicResource {
	return nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: podresources-server SOCKET PODS.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n := &node{}
	if err := json.Unmarshal(data, &n.pods); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
	for _, p := range n.pods {
		obj := &v1.Pod{}
		obj.Namespace, obj.Name, obj.UID = p.Namespace, p.Name, types.UID(p.UID)
		for _, c := range p.Containers {
			obj.Spec.Containers = append(obj.Spec.Containers, v1.Container{Name: c.Name})
		}
		n.objs = append(n.objs, obj)
	}
	providers := podresources.PodResourcesProviders{
		Pods: n, Devices: n, Cpus: n, Memory: n, DynamicResources: n,
	}
	// Serves until killed; exits 1 with a log line if the socket cannot be made.
	server.ListenAndServePodResources(context.Background(), "unix://"+os.Args[1], providers)
}
