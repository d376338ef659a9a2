// Readable text for loop IR. Deterministic: the same IR always prints the same text.

#include "loom/ir/printer.hpp"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "loom/ir/visitor.hpp"

namespace loom::ir {
namespace {

const char* binary_symbol(ExprKind k) {
  switch (k) {
    case ExprKind::kAdd: return " + ";
    case ExprKind::kSub: return " - ";
    case ExprKind::kMul: return " * ";
    case ExprKind::kDiv: return " / ";
    case ExprKind::kMod: return " % ";
    case ExprKind::kEQ: return " == ";
    case ExprKind::kNE: return " != ";
    case ExprKind::kLT: return " < ";
    case ExprKind::kLE: return " <= ";
    case ExprKind::kGT: return " > ";
    case ExprKind::kGE: return " >= ";
    case ExprKind::kAnd: return " && ";
    case ExprKind::kOr: return " || ";
    default: return nullptr;
  }
}

class Printer : public IRVisitor {
 public:
  explicit Printer(std::ostream& os) : os_(os) {}
  using IRVisitor::visit;

  void print_list(const std::vector<Expr>& es) {
    for (size_t i = 0; i < es.size(); ++i) {
      if (i) os_ << ", ";
      visit(es[i]);
    }
  }

 protected:
  void indent() { os_ << std::string(indent_ * 2, ' '); }

  void visit_int_imm(const IntImm* op) override {
    if (op->type == DType::i64()) {
      os_ << op->value;
    } else if (op->type.is_bool()) {
      os_ << (op->value ? "true" : "false");
    } else {
      os_ << "(" << op->type << ")" << op->value;
    }
  }
  void visit_float_imm(const FloatImm* op) override {
    std::ostringstream s;
    if (std::isinf(op->value)) {
      s << (op->value < 0 ? "-inf" : "inf");
    } else {
      s << std::setprecision(9) << op->value;
    }
    if (op->type == DType::f32()) {
      os_ << s.str() << "f";
    } else {
      os_ << "(" << op->type << ")" << s.str();
    }
  }
  void visit_var(const VarNode* op) override { os_ << op->name; }
  void visit_binary(const ExprNode* op, const Expr& a, const Expr& b) override {
    if (const char* sym = binary_symbol(op->kind)) {
      os_ << "(";
      visit(a);
      os_ << sym;
      visit(b);
      os_ << ")";
    } else {
      os_ << (op->kind == ExprKind::kMin ? "min(" : "max(");
      visit(a);
      os_ << ", ";
      visit(b);
      os_ << ")";
    }
  }
  void visit_not(const Not* op) override {
    os_ << "!";
    visit(op->a);
  }
  void visit_select(const Select* op) override {
    os_ << "select(";
    visit(op->cond);
    os_ << ", ";
    visit(op->true_value);
    os_ << ", ";
    visit(op->false_value);
    os_ << ")";
  }
  void visit_cast(const Cast* op) override {
    os_ << op->type << "(";
    visit(op->value);
    os_ << ")";
  }
  void visit_load(const Load* op) override {
    os_ << op->buffer->name << "[";
    print_list(op->indices);
    os_ << "]";
  }
  void visit_call(const Call* op) override {
    os_ << op->name << "(";
    print_list(op->args);
    os_ << ")";
  }
  void visit_ramp(const Ramp* op) override {
    os_ << "ramp(";
    visit(op->base);
    os_ << ", ";
    visit(op->stride);
    os_ << ", " << op->lanes << ")";
  }
  void visit_broadcast(const Broadcast* op) override {
    os_ << "x" << op->lanes << "(";
    visit(op->value);
    os_ << ")";
  }
  void visit_let(const Let* op) override {
    os_ << "(let " << op->var.name() << " = ";
    visit(op->value);
    os_ << " in ";
    visit(op->body);
    os_ << ")";
  }
  void visit_reduce(const Reduce* op) override {
    os_ << reduce_kind_name(op->reduce_kind) << "<" << op->type << ">(";
    visit(op->source);
    os_ << "; ";
    for (size_t i = 0; i < op->axes.size(); ++i) {
      os_ << (i ? ", " : "") << op->axes[i].var.name() << " < ";
      visit(op->axes[i].extent);
    }
    os_ << ")";
  }

  void visit_let_stmt(const LetStmt* op) override {
    indent();
    os_ << "let " << op->var.name() << " = ";
    visit(op->value);
    os_ << "\n";
    visit(op->body);
  }
  void visit_for(const For* op) override {
    indent();
    os_ << for_kind_name(op->for_kind);
    if (op->for_kind == ForKind::kGpuBlock || op->for_kind == ForKind::kGpuThread)
      os_ << "." << "xyz"[op->gpu_axis];
    os_ << " (" << op->var.name() << ", ";
    visit(op->min);
    os_ << ", ";
    visit(op->extent);
    os_ << ") {\n";
    ++indent_;
    visit(op->body);
    --indent_;
    indent();
    os_ << "}\n";
  }
  void visit_store(const Store* op) override {
    indent();
    os_ << op->buffer->name << "[";
    print_list(op->indices);
    os_ << "] = ";
    visit(op->value);
    os_ << "\n";
  }
  void visit_if(const IfThenElse* op) override {
    indent();
    os_ << "if (";
    visit(op->cond);
    os_ << ") {\n";
    ++indent_;
    visit(op->then_case);
    --indent_;
    if (op->else_case.defined()) {
      indent();
      os_ << "} else {\n";
      ++indent_;
      visit(op->else_case);
      --indent_;
    }
    indent();
    os_ << "}\n";
  }
  void visit_allocate(const Allocate* op) override {
    indent();
    os_ << "allocate " << op->buffer->name << ": " << op->buffer->dtype << "["
        << op->buffer->layout.to_string() << "] in " << memory_scope_name(op->buffer->scope)
        << "\n";
    visit(op->body);
  }
  void visit_barrier(const Barrier*) override {
    indent();
    os_ << "barrier()\n";
  }
  void visit_evaluate(const Evaluate* op) override {
    indent();
    visit(op->value);
    os_ << "\n";
  }

 private:
  std::ostream& os_;
  int indent_ = 0;

 public:
  void set_indent(int i) { indent_ = i; }
};

}  // namespace

std::string to_string(const Expr& e) {
  std::ostringstream os;
  os << e;
  return os.str();
}
std::string to_string(const Stmt& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}
std::string to_string(const Func& f) {
  std::ostringstream os;
  os << f;
  return os.str();
}
std::string to_string(const Module& m) {
  std::ostringstream os;
  os << "module " << m.name << " for " << m.target.to_string() << "\n";
  for (const Func& f : m.funcs) os << "\n" << f;
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Expr& e) {
  if (!e.defined()) return os << "<undefined>";
  Printer p(os);
  p.visit(e);
  return os;
}

std::ostream& operator<<(std::ostream& os, const Stmt& s) {
  if (!s.defined()) return os << "<undefined>\n";
  Printer p(os);
  p.visit(s);
  return os;
}

std::ostream& operator<<(std::ostream& os, const Func& f) {
  os << "func " << f.name << "(";
  for (size_t i = 0; i < f.params.size(); ++i) {
    if (i) os << ", ";
    if (auto* b = std::get_if<Buffer>(&f.params[i])) {
      os << b->name() << ": " << b->dtype() << "[" << b->layout().to_string() << "]";
    } else {
      const Var& v = std::get<Var>(f.params[i]);
      os << v.name() << ": " << v.type();
    }
  }
  os << ") {\n";
  Printer p(os);
  p.set_indent(1);
  p.visit(f.body);
  return os << "}\n";
}

}  // namespace loom::ir
