// tfopt's native multi-tensor kernels: one op updates every variable of a step, in place.
//
// Each op takes N variables (and their slots) as resource handles, N dense gradients and the
// step's scalars, and runs the reference update of tfopt's plain ops element by element, with
// the same IEEE roundings in the same order (built with -ffp-contract=off, so no multiply-add
// is fused; -fno-math-errno only lets std::sqrt vectorize, still correctly rounded). Work is split over all elements of all variables at once, on TensorFlow's
// intra-op thread pool. See tfopt/kernels/native.py.

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/denormal.h"
#include "tensorflow/core/platform/threadpool.h"

namespace tfopt {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::Var;
using tensorflow::errors::FailedPrecondition;
using tensorflow::errors::InvalidArgument;

REGISTER_OP("TfoptApplyGradientDescent")
    .Input("var: N * resource")
    .Input("grad: N * T")
    .Input("learning_rate: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, double}")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_OP("TfoptApplyMomentum")
    .Input("var: N * resource")
    .Input("velocity: N * resource")
    .Input("grad: N * T")
    .Input("learning_rate: T")
    .Input("momentum: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, double}")
    .Attr("nesterov: bool = false")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_OP("TfoptApplyAdam")
    .Input("var: N * resource")
    .Input("m: N * resource")
    .Input("v: N * resource")
    .Input("grad: N * T")
    .Input("learning_rate: T")
    .Input("beta_1: T")
    .Input("one_minus_beta_1: T")
    .Input("correction_1: T")
    .Input("beta_2: T")
    .Input("one_minus_beta_2: T")
    .Input("correction_2: T")
    .Input("epsilon: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, double}")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

// x <- x - lr * g
template <typename T>
struct GradientDescentRule {
  static constexpr int kSlots = 0;
  T lr;
  explicit GradientDescentRule(OpKernelContext* ctx, int first) : lr(ctx->input(first).scalar<T>()()) {}
  void operator()(T* __restrict__ x, T* const*, const T* __restrict__ g, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] - lr * g[i];
  }
};

// scaled = lr * g; d <- scaled + momentum * d; x <- x - d  (Nesterov: x <- x - (scaled + momentum * d))
template <typename T>
struct MomentumRule {
  static constexpr int kSlots = 1;
  T lr, momentum;
  bool nesterov;
  MomentumRule(OpKernelContext* ctx, int first, bool nesterov)
      : lr(ctx->input(first).scalar<T>()()), momentum(ctx->input(first + 1).scalar<T>()()), nesterov(nesterov) {}
  void operator()(T* __restrict__ x, T* const* slots, const T* __restrict__ g, int64_t n) const {
    T* __restrict__ d = slots[0];
    if (nesterov) {
      for (int64_t i = 0; i < n; ++i) {
        const T scaled = lr * g[i];
        const T velocity = scaled + momentum * d[i];
        d[i] = velocity;
        x[i] = x[i] - (scaled + momentum * velocity);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const T velocity = lr * g[i] + momentum * d[i];
        d[i] = velocity;
        x[i] = x[i] - velocity;
      }
    }
  }
};

// m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; x <- x - lr ((m / c1) / (sqrt(v / c2) + eps))
template <typename T>
struct AdamRule {
  static constexpr int kSlots = 2;
  T lr, b1, omb1, c1, b2, omb2, c2, eps;
  AdamRule(OpKernelContext* ctx, int first)
      : lr(ctx->input(first).scalar<T>()()),
        b1(ctx->input(first + 1).scalar<T>()()),
        omb1(ctx->input(first + 2).scalar<T>()()),
        c1(ctx->input(first + 3).scalar<T>()()),
        b2(ctx->input(first + 4).scalar<T>()()),
        omb2(ctx->input(first + 5).scalar<T>()()),
        c2(ctx->input(first + 6).scalar<T>()()),
        eps(ctx->input(first + 7).scalar<T>()()) {}
  void operator()(T* __restrict__ x, T* const* slots, const T* __restrict__ g, int64_t n) const {
    T* __restrict__ m = slots[0];
    T* __restrict__ v = slots[1];
    for (int64_t i = 0; i < n; ++i) {
      const T grad = g[i];
      const T m_new = b1 * m[i] + omb1 * grad;
      const T v_new = b2 * v[i] + omb2 * (grad * grad);
      m[i] = m_new;
      v[i] = v_new;
      const T m_hat = m_new / c1;
      const T v_hat = v_new / c2;
      x[i] = x[i] - lr * (m_hat / (std::sqrt(v_hat) + eps));
    }
  }
};

// One variable's buffers during an update.
template <typename T, int S>
struct Segment {
  T* x;
  T* slots[S > 0 ? S : 1];
  const T* g;
  int64_t size;
};

// Makes `var`'s buffer safe to write in place: copied first if a read still holds it.
template <typename T>
tensorflow::Status PrepareInPlace(OpKernelContext* ctx, Var* var) {
  Tensor* tensor = var->tensor();
  if (tensor->NumElements() == 0) return absl::OkStatus();  // nothing to write (and no buffer)
  if (!var->copy_on_read_mode.load() && tensor->RefCountIsOne()) return absl::OkStatus();
  Tensor copy;
  TF_RETURN_IF_ERROR(ctx->allocate_temp(tensor->dtype(), tensor->shape(), &copy));
  std::memcpy(copy.flat<T>().data(), tensor->flat<T>().data(), sizeof(T) * tensor->NumElements());
  *tensor = copy;
  return absl::OkStatus();
}

template <typename T, typename Rule>
class MultiTensorApply : public OpKernel {
 public:
  static constexpr int S = Rule::kSlots;

  explicit MultiTensorApply(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
    if constexpr (std::is_same_v<Rule, MomentumRule<T>>) OP_REQUIRES_OK(ctx, ctx->GetAttr("nesterov", &nesterov_));
  }

  void Compute(OpKernelContext* ctx) override {
    const int resources = (S + 1) * n_;
    std::vector<tensorflow::core::RefCountPtr<Var>> vars(resources);
    for (int i = 0; i < resources; ++i) {
      OP_REQUIRES_OK(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, i), &vars[i]));
    }
    std::vector<tensorflow::mutex*> mutexes;
    for (auto& var : vars) mutexes.push_back(var->mu());
    std::sort(mutexes.begin(), mutexes.end());  // one global order: no deadlock with other updates
    mutexes.erase(std::unique(mutexes.begin(), mutexes.end()), mutexes.end());
    for (auto* mu : mutexes) mu->lock();
    Compute(ctx, vars);
    for (auto it = mutexes.rbegin(); it != mutexes.rend(); ++it) (*it)->unlock();
  }

 private:
  Rule MakeRule(OpKernelContext* ctx) const {
    const int first = (S + 2) * n_;
    if constexpr (std::is_same_v<Rule, MomentumRule<T>>) {
      return Rule(ctx, first, nesterov_);
    } else {
      return Rule(ctx, first);
    }
  }

  void Compute(OpKernelContext* ctx, std::vector<tensorflow::core::RefCountPtr<Var>>& vars) {
    for (int k = (S + 2) * n_; k < ctx->num_inputs(); ++k) {
      OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(ctx->input(k).shape()),
                  InvalidArgument("input ", k, " (a hyperparameter) must be a scalar, got shape ",
                                  ctx->input(k).shape().DebugString()));
    }
    std::vector<Segment<T, S>> segments(n_);
    std::vector<int64_t> ends(n_);
    int64_t total = 0;
    for (int i = 0; i < n_; ++i) {
      const Tensor& grad = ctx->input((S + 1) * n_ + i);
      for (int k = 0; k <= S; ++k) {
        Var* var = vars[k * n_ + i].get();
        OP_REQUIRES(ctx, var->tensor()->IsInitialized(), FailedPrecondition("variable ", k * n_ + i, " is uninitialized"));
        OP_REQUIRES(ctx, var->tensor()->dtype() == grad.dtype(),
                    InvalidArgument("variable ", k * n_ + i, " has another dtype than its gradient"));
        OP_REQUIRES(ctx, var->tensor()->shape() == grad.shape(),
                    InvalidArgument("variable ", k * n_ + i, " has shape ", var->tensor()->shape().DebugString(),
                                    ", its gradient ", grad.shape().DebugString()));
        OP_REQUIRES_OK(ctx, PrepareInPlace<T>(ctx, var));
      }
      Segment<T, S>& segment = segments[i];
      segment.x = vars[i]->tensor()->flat<T>().data();
      for (int k = 0; k < S; ++k) segment.slots[k] = vars[(k + 1) * n_ + i]->tensor()->flat<T>().data();
      segment.g = grad.flat<T>().data();
      segment.size = grad.NumElements();
      total += segment.size;
      ends[i] = total;
    }
    const Rule rule = MakeRule(ctx);
    auto shard = [&](int64_t start, int64_t limit) {
      tsl::port::ScopedFlushDenormal flush;  // as TensorFlow's own CPU kernels run
      int i = std::upper_bound(ends.begin(), ends.end(), start) - ends.begin();
      while (start < limit) {
        const Segment<T, S>& s = segments[i];
        const int64_t offset = start - (ends[i] - s.size);
        const int64_t count = std::min(limit, ends[i]) - start;
        T* slots[S > 0 ? S : 1];
        for (int k = 0; k < S; ++k) slots[k] = s.slots[k] + offset;
        rule(s.x + offset, slots, s.g + offset, count);
        start += count;
        ++i;
      }
    };
    const int64_t cost_per_element = 4 * (S + 1) + 8;  // roughly: cycles of memory traffic and arithmetic
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(total, cost_per_element, shard);
  }

  int n_ = 0;
  bool nesterov_ = false;
};

#define TFOPT_REGISTER(T)                                                                                  \
  REGISTER_KERNEL_BUILDER(Name("TfoptApplyGradientDescent").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          MultiTensorApply<T, GradientDescentRule<T>>);                                    \
  REGISTER_KERNEL_BUILDER(Name("TfoptApplyMomentum").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),        \
                          MultiTensorApply<T, MomentumRule<T>>);                                           \
  REGISTER_KERNEL_BUILDER(Name("TfoptApplyAdam").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),            \
                          MultiTensorApply<T, AdamRule<T>>);

TFOPT_REGISTER(float)
TFOPT_REGISTER(double)

}  // namespace tfopt
