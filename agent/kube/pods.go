package kube

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// NodePods lists the pods bound to this node that match labelSelector
// ("spark-role=executor"): one LIST with a spec.nodeName field selector, as
// kubelet's own watch uses, so the API server filters them.
func (c *Client) NodePods(ctx context.Context, labelSelector string) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	err := c.core.Get().Resource("pods").
		Param("fieldSelector", fields.OneTermEqualSelector("spec.nodeName", c.NodeName).String()).
		Param("labelSelector", labelSelector).
		Do(ctx).Into(list)
	return list.Items, err
}

// Pod reads one pod.
func (c *Client) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := c.core.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(pod)
	return pod, err
}

// Evict asks the Eviction API to delete a pod, honouring its
// PodDisruptionBudgets; grace overrides the pod's termination grace period
// when not nil. A 429 (a budget refuses) is returned as is
// (apierrors.IsTooManyRequests).
func (c *Client) Evict(ctx context.Context, namespace, name string, grace *int64) error {
	ev := &policyv1.Eviction{
		TypeMeta:      metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta:    metav1.ObjectMeta{Name: name, Namespace: namespace},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: grace},
	}
	body, _ := json.Marshal(ev)
	return c.core.Post().Namespace(namespace).Resource("pods").Name(name).SubResource("eviction").
		SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Error()
}

// GuardPod creates a PodDisruptionBudget that allows no eviction of the pods
// matching selector (labels of pod that single it out), owned by pod so that
// the garbage collector deletes it with the pod. It is how a feature keeps a
// drain from evicting a pod while that pod finishes on its own: a pod that
// has exited (Succeeded or Failed) can always be evicted. An existing budget
// of that name is not an error.
func (c *Client) GuardPod(ctx context.Context, pod *corev1.Pod, name string, selector map[string]string) error {
	zero := intstr.FromInt32(0)
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: pod.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": Component},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			}},
		},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &zero,
			Selector:       &metav1.LabelSelector{MatchLabels: selector},
		},
	}
	body, _ := json.Marshal(pdb)
	err := c.policy.Post().Namespace(pod.Namespace).Resource("poddisruptionbudgets").
		SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Error()
	if isAlreadyExists(err) {
		return nil
	}
	return err
}

// Unguard deletes a budget made by GuardPod; one already gone is not an error.
func (c *Client) Unguard(ctx context.Context, namespace, name string) error {
	err := c.policy.Delete().Namespace(namespace).Resource("poddisruptionbudgets").Name(name).Do(ctx).Error()
	if isNotFound(err) {
		return nil
	}
	return err
}

// PodEvent records an Event on a pod, rate-limited per reason like Event.
func (c *Client) PodEvent(pod *corev1.Pod, eventType, reason, action, note string, args ...any) {
	c.record(pod.Namespace, corev1.ObjectReference{
		APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
	}, eventType, reason, action, note, args...)
}

// AddTaint puts taint on the Node, replacing one with the same key and
// effect but another value. It reports whether the Node changed.
func (c *Client) AddTaint(ctx context.Context, taint corev1.Taint) (bool, error) {
	return c.editTaints(ctx, func(taints []corev1.Taint) []corev1.Taint {
		out := []corev1.Taint{}
		for _, t := range taints {
			if t.Key == taint.Key && t.Effect == taint.Effect {
				if t.Value == taint.Value {
					return nil
				}
				continue
			}
			out = append(out, t)
		}
		return append(out, taint)
	})
}

// SetAnnotation sets one annotation on the Node; value nil removes it.
func (c *Client) SetAnnotation(ctx context.Context, key string, value *string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{key: value}}})
	if err != nil {
		return fmt.Errorf("annotation %s: %w", key, err)
	}
	return c.patchNode(ctx, types.MergePatchType, patch)
}
