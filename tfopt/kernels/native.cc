// tfopt's native multi-tensor kernels: one op updates every variable of a step, in place.
//
// Each op takes N variables (and their slots) as resource handles, N dense gradients and the
// step's scalars, and runs the reference update of tfopt's plain ops element by element, with
// the same IEEE roundings in the same order (built with -ffp-contract=off, so no multiply-add
// is fused; -fno-math-errno only lets std::sqrt vectorize, still correctly rounded). Work is split over all elements of all variables at once, on TensorFlow's
// intra-op thread pool. See tfopt/kernels/native.py.

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
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

// ------------------------------------------------------------------------------------------------------
// TfoptApplyRule: the op of a rule compiled by tfopt/kernels/compiler.py. The rule's loop body lives in a
// small library of its own, built from the rule's traced graph (no TensorFlow headers, so it builds in well
// under a second); Python loads it, checks it, and registers its entry point here under the rule's key
// (tfopt_register_rule, through ctypes). The op names that key in its `rule` attribute: a graph holding
// the op runs only in a process that registered the rule (otherwise: a clear error, never a stale pointer).
//
// A rule's entry point steps `n` consecutive elements of one variable in its compute dtype C, in place:
//   fn(x, slots, g, scalars, n, tail)
// x and the slots are C arrays (the variable's own buffers, or float copies of half-precision ones), g the
// gradient, scalars the step's scalars; `tail` says that the elements are in the last (size % packet) of their
// variable, where TensorFlow's Eigen kernels take their scalar path (min/max of signed zeros differ there).

using RuleFunction = void (*)(void* x, void* const* slots, const void* g, const void* scalars, int64_t n, int tail);

struct RuleEntry {
  RuleFunction function = nullptr;
  tensorflow::DataType dtype = tensorflow::DT_INVALID;
};

std::mutex& RegistryMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

std::unordered_map<std::string, RuleEntry>& Registry() {
  static auto* registry = new std::unordered_map<std::string, RuleEntry>;
  return *registry;
}

REGISTER_OP("TfoptApplyRule")
    .Input("var: N * resource")
    .Input("slots: M * resource")
    .Input("grad: N * C")
    .Input("scalars: C")
    .Attr("N: int >= 1")
    .Attr("M: int >= 0")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("C: {float, double}")
    .Attr("rule: string")
    .Attr("packet: int >= 0 = 0")
    .Attr("cost: int >= 1 = 16")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

constexpr int kMaxRuleSlots = 16;

template <typename T, typename C>
class ApplyRule : public OpKernel {
 public:
  explicit ApplyRule(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int m = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("M", &m));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rule", &key_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("packet", &packet_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cost", &cost_));
    OP_REQUIRES(ctx, m % n_ == 0, InvalidArgument("M (", m, ") must be a multiple of N (", n_, ")"));
    slots_ = m / n_;
    OP_REQUIRES(ctx, slots_ <= kMaxRuleSlots, InvalidArgument("at most ", kMaxRuleSlots, " slots per variable"));
    std::lock_guard<std::mutex> lock(RegistryMutex());
    auto found = Registry().find(key_);
    OP_REQUIRES(ctx, found != Registry().end(),
                FailedPrecondition("tfopt rule ", key_, " is not loaded in this process (a graph made elsewhere?): "
                                   "step the optimizer once, or call tfopt.kernels.compiler.compile_rule, first"));
    OP_REQUIRES(ctx, found->second.dtype == tensorflow::DataTypeToEnum<C>::value,
                InvalidArgument("tfopt rule ", key_, " was compiled for another dtype"));
    function_ = found->second.function;
  }

  void Compute(OpKernelContext* ctx) override {
    const int resources = (slots_ + 1) * n_;
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
  void Compute(OpKernelContext* ctx, std::vector<tensorflow::core::RefCountPtr<Var>>& vars) {
    const Tensor& scalars = ctx->input((slots_ + 2) * n_);
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsVector(scalars.shape()),
                InvalidArgument("scalars must be a vector, got shape ", scalars.shape().DebugString()));
    const C* scalar_values = scalars.flat<C>().data();
    std::vector<T*> pointers((slots_ + 1) * n_);
    std::vector<const C*> grads(n_);
    std::vector<int64_t> sizes(n_), ends(n_);
    int64_t total = 0;
    for (int i = 0; i < n_; ++i) {
      const Tensor& grad = ctx->input((slots_ + 1) * n_ + i);
      for (int k = 0; k <= slots_; ++k) {
        Var* var = vars[k * n_ + i].get();
        OP_REQUIRES(ctx, var->tensor()->IsInitialized(), FailedPrecondition("variable ", k * n_ + i, " is uninitialized"));
        OP_REQUIRES(ctx, var->tensor()->dtype() == tensorflow::DataTypeToEnum<T>::value,
                    InvalidArgument("variable ", k * n_ + i, " has another dtype than T"));
        OP_REQUIRES(ctx, var->tensor()->shape() == grad.shape(),
                    InvalidArgument("variable ", k * n_ + i, " has shape ", var->tensor()->shape().DebugString(),
                                    ", its gradient ", grad.shape().DebugString()));
        OP_REQUIRES_OK(ctx, PrepareInPlace<T>(ctx, var));
        pointers[k * n_ + i] = var->tensor()->template flat<T>().data();
      }
      grads[i] = grad.flat<C>().data();
      sizes[i] = grad.NumElements();
      total += sizes[i];
      ends[i] = total;
    }
    auto shard = [&](int64_t start, int64_t limit) {
      tsl::port::ScopedFlushDenormal flush;  // as TensorFlow's own CPU kernels run
      int i = std::upper_bound(ends.begin(), ends.end(), start) - ends.begin();
      while (start < limit) {
        const int64_t offset = start - (ends[i] - sizes[i]);
        const int64_t count = std::min(limit, ends[i]) - start;
        // Eigen's scalar path covers the last (size % packet) elements of a variable (all of them if packet is 0)
        const int64_t tail = packet_ > 0 ? sizes[i] - sizes[i] % packet_ : 0;
        const int64_t split = std::clamp(tail - offset, int64_t{0}, count);
        if (split > 0) Run(i, offset, split, grads[i], scalar_values, pointers, 0);
        if (split < count) Run(i, offset + split, count - split, grads[i], scalar_values, pointers, 1);
        start += count;
        ++i;
      }
    };
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(total, cost_, shard);
  }

  // Elements [offset, offset + count) of variable i.
  void Run(int i, int64_t offset, int64_t count, const C* g, const C* scalars, const std::vector<T*>& pointers,
           int tail) const {
    if constexpr (std::is_same_v<T, C>) {
      C* slots[kMaxRuleSlots > 0 ? kMaxRuleSlots : 1];
      for (int k = 0; k < slots_; ++k) slots[k] = pointers[(k + 1) * n_ + i] + offset;
      function_(pointers[i] + offset, reinterpret_cast<void* const*>(slots), g + offset, scalars, count, tail);
    } else {  // half precision: step float copies of a block, round back once (as the plain ops' casts do)
      constexpr int64_t kBlock = 256;
      C x[kBlock];
      C slot_values[kMaxRuleSlots][kBlock];
      C* slots[kMaxRuleSlots];
      for (int k = 0; k < slots_; ++k) slots[k] = slot_values[k];
      for (int64_t done = 0; done < count; done += kBlock) {
        const int64_t n = std::min(kBlock, count - done);
        T* xs = pointers[i] + offset + done;
        for (int64_t j = 0; j < n; ++j) x[j] = static_cast<C>(xs[j]);
        for (int k = 0; k < slots_; ++k) {
          const T* s = pointers[(k + 1) * n_ + i] + offset + done;
          for (int64_t j = 0; j < n; ++j) slot_values[k][j] = static_cast<C>(s[j]);
        }
        function_(x, reinterpret_cast<void* const*>(slots), g + offset + done, scalars, n, tail);
        for (int64_t j = 0; j < n; ++j) xs[j] = static_cast<T>(x[j]);
        for (int k = 0; k < slots_; ++k) {
          T* s = pointers[(k + 1) * n_ + i] + offset + done;
          for (int64_t j = 0; j < n; ++j) s[j] = static_cast<T>(slot_values[k][j]);
        }
      }
    }
  }

  int n_ = 0, slots_ = 0, packet_ = 0, cost_ = 16;
  std::string key_;
  RuleFunction function_ = nullptr;
};

#define TFOPT_REGISTER_RULE(T, C)                                                                              \
  REGISTER_KERNEL_BUILDER(                                                                                     \
      Name("TfoptApplyRule").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T").TypeConstraint<C>("C"), \
      ApplyRule<T, C>);

TFOPT_REGISTER_RULE(float, float)
TFOPT_REGISTER_RULE(double, double)
TFOPT_REGISTER_RULE(Eigen::half, float)
TFOPT_REGISTER_RULE(Eigen::bfloat16, float)

}  // namespace tfopt

// Called by tfopt/kernels/compiler.py (ctypes): make `function` (a rule's entry point, compute dtype `dtype`,
// a tensorflow::DataType) the op's rule `key` in this process. Returns 0.
extern "C" __attribute__((visibility("default"))) int tfopt_register_rule(const char* key, void* function, int dtype) {
  std::lock_guard<std::mutex> lock(tfopt::RegistryMutex());
  tfopt::RuleEntry& entry = tfopt::Registry()[key];
  entry.function = reinterpret_cast<tfopt::RuleFunction>(function);
  entry.dtype = static_cast<tensorflow::DataType>(dtype);
  return 0;
}
